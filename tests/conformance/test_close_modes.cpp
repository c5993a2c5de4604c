// close(id, close_mode::reset): what is queued is dropped and the peer gets
// a reset at once, even while a graceful close is stuck sending to a peer
// that does not read; the closed event says closed_by_user either way.
#include "support.hpp"

using namespace ionet_test;

namespace {

constexpr std::uint32_t reset_message = 64 * 1024;

}  // namespace

TEST_CASE("close modes: reset drops what is queued, the peer sees a reset",
          "[conformance][close]") {
  for (const auto mode :
       {server::delivery::pull, server::delivery::inline_handler}) {
    INFO((mode == server::delivery::pull ? "pull" : "inline handler"));
    server s(
        small_queue_options(reset_message),
        [](ionet::engine&, const ionet::event&) {}, mode);
    REQUIRE(s.start().ok());
    ionet::framed_client c;
    std::string why;
    const auto id = connect_one(s, c, why);
    INFO(why);
    REQUIRE(id);
    std::error_code refused;
    (void)fill_queue(s.engine(), *id, reset_message, refused);
    REQUIRE(refused == ionet::errc::queue_full);
    const std::uint64_t dropped_before = s.engine().stats().bytes_dropped;

    CHECK_FALSE(s.engine().close(*id, ionet::close_mode::reset));
    REQUIRE(s.wait_closed_id(*id));
    CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::closed_by_user);
    CHECK(s.engine().stats().bytes_dropped > dropped_before);
    CHECK(s.engine().close(*id, ionet::close_mode::reset) ==
          ionet::errc::stale_connection);
    const std::error_code end = read_until_closed(c);
    INFO("the client's end: " << end.message());
    CHECK(is_reset(end));
    CHECK(s.snapshot().order_errors.empty());
  }
}

TEST_CASE("close modes: reset cuts short a graceful close stuck sending",
          "[conformance][close]") {
  server s(small_queue_options(reset_message),
           [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  std::error_code refused;
  (void)fill_queue(s.engine(), *id, reset_message, refused);
  REQUIRE(refused == ionet::errc::queue_full);

  // Graceful: it waits for the queue to drain, which it never will.
  CHECK_FALSE(s.engine().close(*id));
  CHECK(s.engine().close(*id) == ionet::errc::closing);
  CHECK(s.engine().send(*id, pattern(10, 1)) == ionet::errc::closing);
  std::this_thread::sleep_for(200ms);
  CHECK_FALSE(s.snapshot().closed_of(*id));

  CHECK_FALSE(s.engine().close(*id, ionet::close_mode::reset));
  REQUIRE(s.wait_closed_id(*id));
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::closed_by_user);
  const std::error_code end = read_until_closed(c);
  INFO("the client's end: " << end.message());
  CHECK(is_reset(end));
}

TEST_CASE("close modes: a second reset, or a graceful one after it, is closing",
          "[conformance][close]") {
  std::atomic<bool> hold{true};
  std::error_code second_reset, graceful_after;
  // The inline handler holds the connection's thread while it closes
  // twice, so the closed event cannot come in between.
  server s(
      local_options(),
      [&](ionet::engine& eng, const ionet::event& ev) {
        if (ev.type != ionet::event_type::message || !hold.exchange(false))
          return;
        if (eng.close(ev.conn, ionet::close_mode::reset)) return;
        second_reset = eng.close(ev.conn, ionet::close_mode::reset);
        graceful_after = eng.close(ev.conn);
      },
      server::delivery::inline_handler);
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  REQUIRE_FALSE(c.write(pattern(10, 0)));
  REQUIRE(s.wait_closed_id(*id));
  CHECK(second_reset == ionet::errc::closing);
  CHECK(graceful_after == ionet::errc::closing);
  CHECK(is_reset(read_until_closed(c)));
}

TEST_CASE("close modes: shutdown_send ends our stream, reading goes on",
          "[conformance][close]") {
  for (const auto mode :
       {server::delivery::pull, server::delivery::inline_handler}) {
    INFO((mode == server::delivery::pull ? "pull" : "inline handler"));
    std::atomic<int> messages{0};
    std::error_code shut, send_after, shut_again;
    // Set once the three results are written: in the pull model the FIN
    // may reach the client before the handler has made its last calls.
    std::atomic<bool> answered{false};
    // The first message is answered, then our side is shut; later
    // messages are only counted.
    server s(
        local_options(),
        [&](ionet::engine& eng, const ionet::event& ev) {
          if (ev.type != ionet::event_type::message) return;
          if (messages.fetch_add(1) != 0) return;
          (void)eng.send(ev.conn, pattern(5000, 7));
          shut = eng.shutdown_send(ev.conn);
          send_after = eng.send(ev.conn, pattern(10, 8));
          shut_again = eng.shutdown_send(ev.conn);
          answered.store(true, std::memory_order_release);
        },
        mode);
    REQUIRE(s.start().ok());
    ionet::framed_client c;
    std::string why;
    const auto id = connect_one(s, c, why);
    INFO(why);
    REQUIRE(id);

    REQUIRE_FALSE(c.write(pattern(10, 1)));
    std::vector<std::byte> got;
    REQUIRE_FALSE(c.read(got, wait_budget));
    CHECK(same_bytes(got, pattern(5000, 7)));  // queued before the FIN
    CHECK(c.read(got, wait_budget) == ionet::errc::peer_closed);
    REQUIRE(
        eventually([&] { return answered.load(std::memory_order_acquire); }));
    CHECK_FALSE(shut);
    CHECK(send_after == ionet::errc::closing);
    CHECK(shut_again == ionet::errc::closing);

    // The server still reads: our stream is not over.
    REQUIRE_FALSE(c.write(pattern(10, 2)));
    CHECK(s.wait_until([](const record& r) { return r.messages >= 2; }));
    CHECK_FALSE(s.snapshot().closed_of(*id));
    c.close();
    REQUIRE(s.wait_closed_id(*id));
    CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::peer_closed);
    CHECK(s.engine().shutdown_send(*id) == ionet::errc::stale_connection);
    CHECK(s.engine().stats().bytes_dropped == 0);
  }
}
