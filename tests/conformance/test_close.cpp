// close(id) from the user is graceful: what was queued before it is
// flushed, then the client sees EOF; the closed event says closed_by_user.
#include "support.hpp"

using namespace ionet_test;

TEST_CASE("close: user close flushes what was queued, then the client sees EOF",
          "[conformance][close]") {
  constexpr int replies = 24;
  constexpr std::size_t reply_size = 100 * 1024;  // 2.4 MB: more than one write
  ionet::options o = local_options();
  o.max_message_bytes = reply_size;
  o.max_queued_bytes = 8u << 20;

  std::atomic<int> send_failures{0};
  std::atomic<int> close_result{-1};
  std::error_code send_after_close, close_again;
  server s(o, [&](ionet::engine& eng, const ionet::event& ev) {
    if (ev.type != ionet::event_type::message) return;
    // Any message: answer with `replies` messages, then close at once.
    for (int i = 0; i < replies; ++i) {
      if (eng.send(ev.conn,
                   pattern(reply_size, static_cast<std::uint64_t>(i)))) {
        send_failures.fetch_add(1);
      }
    }
    close_result.store(eng.close(ev.conn).value());
    send_after_close = eng.send(ev.conn, pattern(10, 1));
    close_again = eng.close(ev.conn);
  });
  REQUIRE(s.start().ok());

  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  REQUIRE_FALSE(c.write(pattern(1, 0)));

  int got_ok = 0;
  std::string problem;
  for (int i = 0; i < replies; ++i) {
    std::vector<std::byte> got;
    if (auto ec = c.read(got, wait_budget)) {
      problem = "reply " + std::to_string(i) + ": " + ec.message();
      break;
    }
    if (!same_bytes(got, pattern(reply_size, static_cast<std::uint64_t>(i)))) {
      problem = "reply " + std::to_string(i) + " differs";
      break;
    }
    ++got_ok;
  }
  INFO(problem);
  CHECK(got_ok == replies);
  // After the last reply: a clean EOF.
  CHECK(read_until_closed(c) == ionet::errc::peer_closed);

  REQUIRE(s.wait_closed_id(*id));
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::closed_by_user);
  CHECK(send_failures.load() == 0);
  CHECK(close_result.load() == 0);
  // Once close() is called, the connection takes nothing more.
  CHECK((send_after_close == ionet::errc::closing ||
         send_after_close == ionet::errc::stale_connection));
  CHECK((close_again == ionet::errc::closing ||
         close_again == ionet::errc::stale_connection));
  // And once closed, the id is stale.
  CHECK(s.engine().send(*id, pattern(1, 2)) == ionet::errc::stale_connection);
  CHECK(s.engine().close(*id) == ionet::errc::stale_connection);
  const auto st = s.engine().stats();
  CHECK(st.bytes_dropped == 0);
  CHECK(st.connections_open == 0);
}

TEST_CASE("close: user close of an idle connection from the user's thread",
          "[conformance][close]") {
  server s;
  REQUIRE(s.start().ok());
  ionet::framed_client c, other;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  REQUIRE(connect_one(s, other, why));
  CHECK_FALSE(echo_roundtrip(c, pattern(50, 1)));

  // From a thread that is not the poll loop.
  const auto last = pattern(2000, 2);
  CHECK_FALSE(s.engine().send(*id, last));
  CHECK_FALSE(s.engine().close(*id));
  std::vector<std::byte> got;
  REQUIRE_FALSE(c.read(got));
  CHECK(same_bytes(got, last));
  CHECK(read_until_closed(c) == ionet::errc::peer_closed);
  REQUIRE(s.wait_closed_id(*id));
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::closed_by_user);
  // The other connection is untouched.
  CHECK_FALSE(echo_roundtrip(other, pattern(50, 3)));
  CHECK(s.snapshot().closed.size() == 1);
}

TEST_CASE(
    "close: connections closed by the server linger and end on the thread "
    "that serves them, while their slots move between threads",
    "[conformance][close]") {
  // Two engine threads share the slots. Each round, client `a` is closed
  // by the server as it connects and closes too, ending its linger early;
  // client `b` then likely takes a's slot on the other thread, is closed by
  // the server as well and never closes: it lingers (until stop() here).
  // The libuv backend kept a's slot on the first thread's linger list
  // after a's connection closed: that thread's sweeps then read b's linger
  // deadline, written by the other thread (TSan: a data race, 3 of 3
  // runs), and at the deadline would have closed b's handle, which
  // belongs to the other thread's loop.
  constexpr int rounds = 4;
  ionet::options o = local_options();
  o.threads = 2;
  o.max_connections = 2 * rounds;
  server s(o, [](ionet::engine& eng, const ionet::event& ev) {
    if (ev.type == ionet::event_type::connected) (void)eng.close(ev.conn);
  });
  REQUIRE(s.start().ok());

  std::vector<ionet::framed_client> held(rounds);
  for (int r = 0; r < rounds; ++r) {
    INFO("round " << r);
    ionet::framed_client a;
    REQUIRE(connect_client(a, s.port()).ok());
    CHECK(read_until_closed(a) == ionet::errc::peer_closed);
    a.close();
    REQUIRE(s.wait_closed(static_cast<std::size_t>(2 * r + 1)));
    // Time for the server to see a's EOF and free its slot (the last one
    // freed is the next one taken), so that b likely gets it.
    std::this_thread::sleep_for(100ms);
    REQUIRE(connect_client(held[r], s.port()).ok());
    CHECK(read_until_closed(held[r]) == ionet::errc::peer_closed);
  }
  // The server ends every lingering connection by itself.
  REQUIRE(s.wait_closed(2 * rounds));
  const record rec = s.snapshot();
  CHECK(rec.order_errors.empty());
  for (const auto& c : rec.closed) {
    CHECK(c.reason == ionet::errc::closed_by_user);
  }
  const auto st = s.engine().stats();
  CHECK(st.accepted == 2 * rounds);
  CHECK(st.connections_open == 0);
}
