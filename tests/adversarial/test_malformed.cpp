// Hostile bytes: a header announcing 4 GiB, random garbage, a slowloris
// crowd. Each bad connection is closed with a named reason; the good ones
// carry on; nothing is allocated for what a bad header announces.
#include <random>

#include "adversarial.hpp"

using namespace ionet_test;

TEST_CASE(
    "adversarial: a header announcing 4 GiB is refused at once, with no allocation",
    "[adversarial]") {
  server s;
  REQUIRE(s.start().ok());
  ionet::framed_client good;
  REQUIRE(connect_client(good, s.port()).ok());
  REQUIRE_FALSE(echo_roundtrip(good, pattern(1000, 1)));
  const auto before = s.engine().stats();

  for (int i = 0; i < 20; ++i) {
    ionet::framed_client c;
    std::string why;
    const auto id = connect_one(s, c, why);
    INFO(why);
    REQUIRE(id);
    const std::byte huge[4] = {std::byte{0xff}, std::byte{0xff},
                               std::byte{0xff}, std::byte{0xff}};
    REQUIRE_FALSE(c.write_raw(huge));
    REQUIRE(s.wait_closed_id(*id));
    CHECK(s.snapshot().closed_of(*id)->reason ==
          ionet::errc::message_too_large);
    CHECK(read_until_closed(c) != std::errc::timed_out);
  }
  const auto after = s.engine().stats();
  CHECK(after.frames_too_large == before.frames_too_large + 20);
  // Nothing was allocated for what the headers announced.
  CHECK(after.allocations_after_start == before.allocations_after_start);
  CHECK_FALSE(echo_roundtrip(good, pattern(1000, 2)));
  settle_and_check(s);
}

TEST_CASE(
    "adversarial: random garbage from many clients leaves good clients unharmed",
    "[adversarial]") {
  ionet::options o = local_options();
  o.max_message_bytes = 64 * 1024;
  server s(o);
  REQUIRE(s.start().ok());
  ionet::framed_client good;
  REQUIRE(connect_client(good, s.port()).ok());

  std::mt19937_64 rng(7);
  const int clients = scaled(200);
  for (int i = 0; i < clients; ++i) {
    ionet::framed_client c;
    if (!connect_client(c, s.port())) continue;
    std::vector<std::byte> junk(1 + rng() % 20000);
    for (auto& b : junk) b = static_cast<std::byte>(rng());
    (void)c.write_raw(junk);
    if (i % 3 == 0) c.reset();  // some vanish abruptly
    if (i % 10 == 0)
      REQUIRE_FALSE(
          echo_roundtrip(good, pattern(500, static_cast<std::uint64_t>(i))));
  }
  REQUIRE_FALSE(echo_roundtrip(good, pattern(5000, 99)));
  // Every garbage connection ends (bad frame, reset, or the client's close).
  CHECK(eventually([&] { return s.engine().stats().connections_open == 1; }));
  const record r = s.snapshot();
  CHECK(r.order_errors.empty());
  for (const auto& c : r.closed) {
    const bool named = c.reason == ionet::errc::message_too_large ||
                       c.reason == ionet::errc::connection_reset ||
                       c.reason == ionet::errc::peer_closed;
    INFO("reason " << c.reason.message());
    CHECK(named);
  }
  settle_and_check(s);
}

TEST_CASE(
    "adversarial: a slowloris crowd is cut off by read_timeout while others are served",
    "[adversarial]") {
  ionet::options o = local_options();
  o.read_timeout = std::chrono::milliseconds(slow_platform ? 1500 : 700);
  server s(o);
  REQUIRE(s.start().ok());
  ionet::framed_client good;
  REQUIRE(connect_client(good, s.port()).ok());
  const int crowd = scaled(100);
  std::vector<ionet::framed_client> lorises(static_cast<std::size_t>(crowd));
  for (auto& c : lorises) REQUIRE(connect_client(c, s.port()).ok());
  const auto f = frame(pattern(100, 3));
  // One byte each, a tenth of the timeout apart, far slower than the
  // timeout allows a message to take.
  for (std::size_t b = 0; b < 12; ++b) {
    for (auto& c : lorises) (void)c.write_raw(std::span(f).subspan(b, 1));
    REQUIRE_FALSE(echo_roundtrip(good, pattern(200, b)));
    std::this_thread::sleep_for(o.read_timeout / 10);
    if (s.snapshot().closed.size() == lorises.size()) break;
  }
  REQUIRE(s.wait_closed(lorises.size()));
  for (const auto& c : s.snapshot().closed)
    CHECK(c.reason == ionet::errc::read_timeout);
  CHECK_FALSE(echo_roundtrip(good, pattern(200, 100)));
  settle_and_check(s);
}
