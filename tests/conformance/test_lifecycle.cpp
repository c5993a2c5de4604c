// Start, stop and port: an engine can be started and stopped many times,
// port 0 yields a real port, and the lifecycle calls behave at the edges.
#include "support.hpp"

using namespace ionet_test;

TEST_CASE("lifecycle: start and stop 100 times", "[conformance][lifecycle]") {
  const auto payload = pattern(300, 1);
  for (int i = 0; i < 100; ++i) {
    INFO("iteration " << i);
    ionet::options o = local_options();
    if (i % 2) o.max_connections = 64;  // alternate pool sizes
    auto eng = ionet::make_engine(o);
    REQUIRE(eng);
    const ionet::status s = eng->start();
    REQUIRE(s.ok());
    REQUIRE(eng->port() != 0);
    if (i % 10 == 0) {
      // Now and then prove the started engine really serves.
      ionet::framed_client c;
      REQUIRE(connect_client(c, eng->port()).ok());
      REQUIRE_FALSE(c.write(payload));
      std::vector<ionet::event> batch(16);
      bool got = false;
      const auto deadline = steady::now() + wait_budget;
      while (!got && steady::now() < deadline) {
        const std::size_t n = eng->poll(batch, 20ms);
        for (std::size_t k = 0; k < n; ++k) {
          if (batch[k].type == ionet::event_type::message) {
            got = same_bytes(batch[k].data, payload);
          }
        }
        eng->release(std::span(batch.data(), n));
      }
      CHECK(got);
    }
    if (i % 3 != 0) eng->stop();  // else: the destructor stops it
  }
}

TEST_CASE("lifecycle: port 0 gives a real port that serves",
          "[conformance][lifecycle]") {
  server a;
  server b;
  REQUIRE(a.start().ok());
  REQUIRE(b.start().ok());
  CHECK(a.port() != 0);
  CHECK(b.port() != 0);
  CHECK(a.port() != b.port());

  const std::string name = a.engine().backend_name();
  CHECK((name == "libuv" || name == "iocp" || name == "uring"));

  for (server* s : {&a, &b}) {
    ionet::framed_client c;
    REQUIRE(connect_client(c, s->port()).ok());
    const auto msg = pattern(1000, s->port());
    CHECK_FALSE(echo_roundtrip(c, msg));
  }
}

TEST_CASE(
    "lifecycle: after stop() and start() the pull model delivers messages",
    "[conformance][lifecycle]") {
  server s;  // the pull model, echoing
  REQUIRE(s.start().ok());
  for (int run = 0; run < 3; ++run) {
    INFO("run " << run);
    if (run > 0) REQUIRE(s.engine().start().ok());
    ionet::framed_client c;
    REQUIRE(connect_client(c, s.port()).ok());
    CHECK_FALSE(echo_roundtrip(c, pattern(64, std::uint64_t(run))));
    s.engine().stop();
    CHECK(read_until_closed(c) != std::errc::timed_out);
  }
}

TEST_CASE("lifecycle: start twice is refused with already_running",
          "[conformance][lifecycle]") {
  server s;
  REQUIRE(s.start().ok());
  const std::uint16_t port = s.port();
  const ionet::status again = s.engine().start();
  CHECK(again.code == ionet::errc::already_running);
  CHECK(s.port() == port);
  // The engine still serves.
  ionet::framed_client c;
  REQUIRE(connect_client(c, port).ok());
  CHECK_FALSE(echo_roundtrip(c, pattern(64, 2)));
}

TEST_CASE(
    "lifecycle: stop is safe twice, before start, and from the destructor",
    "[conformance][lifecycle]") {
  {
    auto eng = ionet::make_engine(local_options());
    REQUIRE(eng);
    eng->stop();  // never started
    eng->stop();
    std::vector<ionet::event> batch(4);
    CHECK(eng->poll(batch, 0ms) == 0);
  }
  {
    auto eng = ionet::make_engine(local_options());
    REQUIRE(eng->start().ok());
    eng->stop();
    eng->stop();
    std::vector<ionet::event> batch(4);
    const auto t0 = steady::now();
    CHECK(eng->poll(batch, 5000ms) == 0);  // stopped and drained: at once
    CHECK(steady::now() - t0 < 2500ms);
    // Calls on a stopped engine fail cleanly.
    const auto msg = pattern(8, 3);
    CHECK(eng->send(made_id(0, 1), msg));
    CHECK(eng->close(made_id(0, 1)));
  }
  {
    auto eng = ionet::make_engine(local_options());
    REQUIRE(eng->start().ok());
    // destroyed while running
  }
}
