// Writability: a connection whose send() was refused (queue_full) gets one
// writable event once its queue has drained to options::send_low_water,
// and none before; queued_bytes() tells what is queued. The engine-wide
// cap refuses a connection with nothing queued of its own: it hears once
// the other connections' queues have drained.
#include "support.hpp"

using namespace ionet_test;

namespace {

constexpr std::uint32_t big_message = 64 * 1024;

// Reads `n` messages sent by fill_queue (seeds first..first+n-1).
bool read_sent(ionet::framed_client& c, std::uint32_t first, std::uint32_t n,
               std::string& why) {
  std::vector<std::byte> got;
  for (std::uint32_t i = first; i < first + n; ++i) {
    if (auto ec = c.read(got, wait_budget)) {
      why = "read " + std::to_string(i) + ": " + ec.message();
      return false;
    }
    if (!same_bytes(got, pattern(big_message, i))) {
      why = "message " + std::to_string(i) + " differs";
      return false;
    }
  }
  return true;
}

std::size_t writable_of(const record& r, ionet::connection_id id) {
  return static_cast<std::size_t>(
      std::count(r.writable.begin(), r.writable.end(), id));
}

}  // namespace

TEST_CASE(
    "writable: a connection refused with queue_full hears once it has drained",
    "[conformance][writable]") {
  for (const auto mode :
       {server::delivery::pull, server::delivery::inline_handler}) {
    INFO((mode == server::delivery::pull ? "pull" : "inline handler"));
    const ionet::options o = small_queue_options(big_message);
    const std::uint64_t low_water = o.max_queued_bytes / 4;  // the default
    server s(
        o, [](ionet::engine&, const ionet::event&) {}, mode);
    REQUIRE(s.start().ok());
    ionet::framed_client c;
    std::string why;
    const auto id = connect_one(s, c, why);
    INFO(why);
    REQUIRE(id);
    CHECK(s.engine().queued_bytes(*id) == std::uint64_t{0});

    std::error_code refused;
    const std::uint32_t sent =
        fill_queue(s.engine(), *id, big_message, refused);
    REQUIRE(refused == ionet::errc::queue_full);
    const auto queued = s.engine().queued_bytes(*id);
    REQUIRE(queued);
    CHECK(*queued > low_water);
    CHECK(*queued <= o.max_queued_bytes);
    // The client reads nothing: the queue cannot drain, no event is due
    // (one may have come while the socket still took bytes).
    const std::size_t before = writable_of(s.snapshot(), *id);
    std::this_thread::sleep_for(200ms);
    CHECK(writable_of(s.snapshot(), *id) == before);

    REQUIRE(read_sent(c, 0, sent, why));
    REQUIRE(s.wait_until(
        [&](const record& r) { return writable_of(r, *id) > before; }));
    // Nothing was sent since: the queue is still at or under the mark, and
    // the many refusals of fill_queue's last 300 ms were owed one event.
    const auto after = s.engine().queued_bytes(*id);
    REQUIRE(after);
    CHECK(*after <= low_water);
    std::this_thread::sleep_for(200ms);
    CHECK(writable_of(s.snapshot(), *id) == before + 1);

    // Sending works again and nothing was lost or reordered.
    CHECK_FALSE(s.engine().send(*id, pattern(big_message, sent)));
    CHECK(read_sent(c, sent, 1, why));
    INFO(why);
    CHECK(s.snapshot().order_errors.empty());

    c.close();
    REQUIRE(s.wait_closed_id(*id));
    CHECK_FALSE(s.engine().queued_bytes(*id));                     // stale
    CHECK_FALSE(s.engine().queued_bytes(ionet::connection_id{}));  // none
    s.stop();
    CHECK_FALSE(s.engine().queued_bytes(*id));
  }
}

TEST_CASE("writable: a send that was never refused brings no event",
          "[conformance][writable]") {
  server s(small_queue_options(big_message));  // echoes every message
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  for (std::uint32_t i = 0; i < 50; ++i) {
    REQUIRE_FALSE(echo_roundtrip(c, pattern(big_message, i)));
  }
  std::this_thread::sleep_for(100ms);
  const record r = s.snapshot();
  CHECK(r.writable.empty());
  CHECK(r.echo_failures == 0);
}

TEST_CASE(
    "writable: one refused by the engine-wide cap hears once others drain",
    "[conformance][writable]") {
  ionet::options o = small_queue_options(big_message);
  // The engine holds one connection's queue in all: a second connection,
  // with nothing of its own queued, is refused while the first is full.
  o.max_total_queued_bytes = o.max_queued_bytes;
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client full, empty;
  std::string why;
  const auto full_id = connect_one(s, full, why);
  INFO(why);
  REQUIRE(full_id);
  const auto empty_id = connect_one(s, empty, why);
  REQUIRE(empty_id);

  std::error_code refused;
  const std::uint32_t sent =
      fill_queue(s.engine(), *full_id, big_message, refused);
  REQUIRE(refused == ionet::errc::queue_full);
  CHECK(s.engine().send(*empty_id, pattern(big_message, 0)) ==
        ionet::errc::queue_full);
  CHECK(s.engine().queued_bytes(*empty_id) == std::uint64_t{0});
  const std::size_t full_before = writable_of(s.snapshot(), *full_id);
  std::this_thread::sleep_for(300ms);  // past a sweep or two
  CHECK(writable_of(s.snapshot(), *full_id) == full_before);
  CHECK(writable_of(s.snapshot(), *empty_id) == 0);

  // Its own queue never moves: the engine's periodic sweep tells it once
  // the first connection's queue has drained.
  REQUIRE(read_sent(full, 0, sent, why));
  CHECK(s.wait_until([&](const record& r) {
    return writable_of(r, *full_id) == full_before + 1 &&
           writable_of(r, *empty_id) == 1;
  }));
  CHECK_FALSE(s.engine().send(*empty_id, pattern(big_message, 0)));
  CHECK(read_sent(empty, 0, 1, why));
  INFO(why);
  CHECK(s.snapshot().order_errors.empty());
}

TEST_CASE("writable: a connection closed while owed one gets closed only",
          "[conformance][writable]") {
  const ionet::options o = small_queue_options(big_message);
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  std::error_code refused;
  (void)fill_queue(s.engine(), *id, big_message, refused);
  REQUIRE(refused == ionet::errc::queue_full);
  const std::size_t before = writable_of(s.snapshot(), *id);  // while filling
  c.reset();  // the queue is dropped with the connection, not drained
  REQUIRE(s.wait_closed_id(*id));
  std::this_thread::sleep_for(300ms);  // past a sweep
  const record r = s.snapshot();
  CHECK(writable_of(r, *id) == before);
  CHECK(r.order_errors.empty());
}
