// A client that resets its connection in the middle of a frame: the server
// reports the connection closed (connection_reset) and carries on.
#include <random>

#include "support.hpp"

using namespace ionet_test;

namespace {

// Connects `resets` clients one after another; each writes part of a frame
// and resets. With `wait_for_read`, the reset comes only once the server has
// read the partial frame; without, the reset follows the bytes at once, so
// the server usually finds both waiting together. Either way the server must
// report connection_reset and carry on serving a long-lived client.
void run_resets(bool wait_for_read) {
  server s;
  REQUIRE(s.start().ok());

  ionet::framed_client steady_client;
  std::string why;
  REQUIRE(connect_one(s, steady_client, why));
  REQUIRE_FALSE(echo_roundtrip(steady_client, pattern(100, 1)));

  std::mt19937 rng(99);
  const auto resets = static_cast<std::size_t>(scaled(12, 2));  // >= 1
  std::vector<ionet::connection_id> reset_ids;
  for (std::size_t i = 0; i < resets; ++i) {
    INFO("reset " << i);
    ionet::framed_client c;
    const auto id = connect_one(s, c, why);
    INFO(why);
    REQUIRE(id);
    reset_ids.push_back(*id);
    // Sometimes a whole message first, so the reset hits a connection that
    // has been used.
    if (i % 2 == 1) REQUIRE_FALSE(echo_roundtrip(c, pattern(300, 50 + i)));

    const std::size_t announced = 1000 + rng() % 50000;
    const auto f = frame(pattern(announced, 100 + i));
    // Stop somewhere inside the frame: in the header or in the payload.
    const std::size_t cut = i % 3 == 0 ? 1 + rng() % 3 : 4 + rng() % announced;
    const std::uint64_t received_before = s.engine().stats().bytes_received;
    REQUIRE_FALSE(c.write_raw(std::span(f).first(cut)));
    if (wait_for_read) {
      REQUIRE(eventually([&] {
        return s.engine().stats().bytes_received >= received_before + cut;
      }));
    }
    c.reset();

    REQUIRE(s.wait_closed_id(*id));
    CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::connection_reset);
    // The server keeps serving between resets.
    REQUIRE_FALSE(echo_roundtrip(steady_client, pattern(1000 + i, 200 + i)));
  }

  // New clients are served after all that.
  ionet::framed_client fresh;
  REQUIRE(connect_client(fresh, s.port()).ok());
  CHECK_FALSE(echo_roundtrip(fresh, pattern(5000, 300)));

  const record r = s.snapshot();
  CHECK(r.closed.size() == reset_ids.size());
  CHECK(r.order_errors.empty());
  CHECK(r.echo_failures == 0);
  CHECK(s.engine().stats().connections_open == 2);
}

}  // namespace

TEST_CASE(
    "reset: a client reset mid-frame, after the server read the partial frame",
    "[conformance][reset]") {
  run_resets(true);
}

TEST_CASE(
    "reset: a client reset mid-frame that arrives together with the partial frame",
    "[conformance][reset]") {
  run_resets(false);
}

TEST_CASE("reset: a client reset with unread replies queued on the server",
          "[conformance][reset]") {
  // The server has sent much more than the client reads, then the client
  // resets: the queued bytes are dropped, the connection is reported
  // closed, and nothing leaks (checked by the sanitizer builds).
  ionet::options o = local_options();
  o.max_message_bytes = 64 * 1024;
  o.max_queued_bytes = 1u << 20;
  lazy_and_other t(o);
  auto& [s, c, other, id, other_id] = t;

  int accepted = 0;
  for (int i = 0; i < 200; ++i) {
    if (s.engine().send(id, pattern(64 * 1024, static_cast<std::uint64_t>(i))))
      break;
    ++accepted;
  }
  CHECK(accepted > 0);
  c.reset();
  REQUIRE(s.wait_closed_id(id));
  const auto reason = s.snapshot().closed_of(id)->reason;
  // The server may see the reset on read or on write; either way it is a
  // reset (a write to a reset socket fails as one too).
  CHECK(reason == ionet::errc::connection_reset);
  CHECK(s.engine().send(id, pattern(10, 1)) == ionet::errc::stale_connection);

  // The other connection is fine.
  const auto msg = pattern(1000, 2);
  CHECK_FALSE(s.engine().send(other_id, msg));
  std::vector<std::byte> got;
  REQUIRE_FALSE(other.read(got));
  CHECK(same_bytes(got, msg));
  CHECK(eventually([&] { return s.engine().stats().pool_slices_in_use == 0; },
                   5000ms));
}
