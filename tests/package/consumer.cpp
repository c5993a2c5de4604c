// Starts an engine from the installed package, echoes one message through a
// framed_client and checks it: the package is usable, not just findable.
#include <cstdio>
#include <ionet/ionet.hpp>
#include <thread>
#include <vector>

int main() {
  auto engine = ionet::make_engine({});
  if (auto s = engine->start(); !s) {
    std::fprintf(stderr, "start: %s\n", s.to_string().c_str());
    return 1;
  }
  std::thread server([&] {
    ionet::event ev[16];
    for (int i = 0; i < 100; ++i) {
      const std::size_t n = engine->poll(ev, std::chrono::milliseconds(50));
      for (std::size_t k = 0; k < n; ++k) {
        if (ev[k].type == ionet::event_type::message)
          (void)engine->send(ev[k].conn, ev[k].data);
      }
      engine->release({ev, n});
    }
  });
  ionet::framed_client client;
  bool ok = client.connect("127.0.0.1", engine->port()).ok();
  const std::vector<std::byte> hello{std::byte{'h'}, std::byte{'i'}};
  std::vector<std::byte> back;
  ok = ok && !client.write(hello) && !client.read(back) && back == hello;
  server.join();
  engine->stop();
  std::printf("consumer (%s backend): %s\n", engine->backend_name(),
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
