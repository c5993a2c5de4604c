// IOCP backend: the worker threads. The seed's default is two per CPU, all
// waiting on one completion port, and any of them may run an inline
// handler.
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace ionet_test;

TEST_CASE("iocp: default options start two workers per CPU",
          "[iocp][workers]") {
  auto eng = ionet::make_engine(local_options());
  REQUIRE(eng->start().ok());
  const std::uint64_t cpus = std::max(1u, std::thread::hardware_concurrency());
  CHECK(eng->stats().threads == 2 * cpus);
}

TEST_CASE(
    "iocp: inline handlers run on several workers under 32 concurrent clients",
    "[iocp][workers]") {
  std::mutex lock;
  std::set<std::thread::id> seen;
  server s(
      local_options(),
      [&](ionet::engine& eng, const ionet::event& ev) {
        {
          std::lock_guard g(lock);
          seen.insert(std::this_thread::get_id());
        }
        if (ev.type == ionet::event_type::message)
          (void)eng.send(ev.conn, ev.data);
      },
      server::delivery::inline_handler);
  REQUIRE(s.start().ok());

  constexpr int nclients = 32;
  const int per_client = scaled(40);
  std::atomic<int> bad{0};
  std::vector<std::thread> clients;
  for (int k = 0; k < nclients; ++k) {
    clients.emplace_back([&, k] {
      ionet::framed_client c;
      if (!connect_client(c, s.port())) {
        bad.fetch_add(1);
        return;
      }
      for (int i = 0; i < per_client; ++i) {
        if (echo_roundtrip(
                c, pattern(64, static_cast<std::uint64_t>(k * 1000 + i)))) {
          bad.fetch_add(1);
          return;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(bad.load() == 0);
  std::lock_guard g(lock);
  INFO("handler threads seen: " << seen.size());
  CHECK(seen.size() >= 2);
}
