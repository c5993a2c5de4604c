// engine_core's writability: a connection that send() refused is owed one
// writable event, which the owner thread's check gives once its queue is at
// or under send_low_water and the engine's queued bytes are under 3/4 of
// their cap; a close lets the debt go.
#include <vector>

#include "catch.hpp"
#include "tests/core_fixture.hpp"

namespace {

using ionet::detail::event_batch;
using ionet::detail::slice_chain;

constexpr std::size_t msg_bytes = 1000;  // 1004 queued with its header

ionet::options small_queues() {
  ionet::options o = ionet_test::core_with_connection::two_slots();
  o.max_message_bytes = msg_bytes;
  o.max_queued_bytes = 4 * (msg_bytes + 4);  // four messages
  return o;
}

std::error_code send_one(ionet_test::core_with_connection& t,
                         ionet::connection_id id) {
  const std::vector<std::byte> msg(msg_bytes, std::byte{7});
  return t.core.send(id, msg).ec;
}

// What the owner thread's check gives `slot` now: writable events only.
std::vector<ionet::event> check(ionet_test::core_with_connection& t,
                                std::uint32_t slot) {
  event_batch out;
  t.core.check_writable(slot, out);
  for (const ionet::event& e : out.events)
    CHECK(e.type == ionet::event_type::writable);
  return out.events;
}

// Writes the first `slices` slices of what is queued (a backend's partial
// write); the rest stays taken, as a backlog does, and is returned.
slice_chain write_some(ionet_test::core_with_connection& t, std::uint32_t slot,
                       slice_chain taken, std::uint32_t slices) {
  slice_chain done = t.core.slices().split_front(taken, slices);
  t.core.write_done(slot, done, true);
  return taken;
}

}  // namespace

TEST_CASE("writable: owed after queue_full, given once under the low water",
          "[unit][writable]") {
  ionet_test::core_with_connection t(small_queues());
  const ionet::connection_id id = *t.id;
  for (int i = 0; i < 4; ++i) REQUIRE_FALSE(send_one(t, id));
  CHECK_FALSE(t.core.writable_waiting());
  CHECK(check(t, t.slot).empty());  // never refused: nothing owed

  CHECK(send_one(t, id) == ionet::errc::queue_full);
  CHECK(send_one(t, id) == ionet::errc::queue_full);  // still one debt
  CHECK(t.core.writable_waiting());
  CHECK(check(t, t.slot).empty());  // 4,016 queued: above 1,004

  slice_chain rest = t.core.take_queue(t.slot).chain;
  rest = write_some(t, t.slot, rest, 1);  // 512 out: 3,504 left
  CHECK(check(t, t.slot).empty());
  rest = write_some(t, t.slot, rest, 5);  // 3,072 out: 944 left
  CHECK(*t.core.queued_bytes(id) == 944);
  const auto got = check(t, t.slot);
  REQUIRE(got.size() == 1);
  CHECK(got[0].conn == id);
  CHECK(ionet::detail::event_access::context_of(got[0]) != nullptr);
  CHECK_FALSE(t.core.writable_waiting());
  CHECK(check(t, t.slot).empty());  // given once
  t.core.write_done(t.slot, rest, true);
  CHECK(*t.core.queued_bytes(id) == 0);
}

TEST_CASE("writable: send_low_water 0 waits for an empty queue",
          "[unit][writable]") {
  ionet::options o = small_queues();
  o.send_low_water = 0;
  ionet_test::core_with_connection t(o);
  const ionet::connection_id id = *t.id;
  for (int i = 0; i < 4; ++i) REQUIRE_FALSE(send_one(t, id));
  CHECK(send_one(t, id) == ionet::errc::queue_full);
  slice_chain rest = t.core.take_queue(t.slot).chain;
  rest = write_some(t, t.slot, rest, rest.count - 1);
  CHECK(*t.core.queued_bytes(id) > 0);
  CHECK(check(t, t.slot).empty());
  t.core.write_done(t.slot, rest, true);
  CHECK(check(t, t.slot).size() == 1);
}

TEST_CASE("writable: a close lets the debt go, with no event",
          "[unit][writable]") {
  ionet_test::core_with_connection t(small_queues());
  const ionet::connection_id id = *t.id;
  for (int i = 0; i < 4; ++i) REQUIRE_FALSE(send_one(t, id));
  CHECK(send_one(t, id) == ionet::errc::queue_full);
  REQUIRE(t.core.writable_waiting());

  // close(): the queue still drains, but a closing connection hears nothing.
  REQUIRE_FALSE(t.core.request_close(id, ionet::close_mode::graceful).ec);
  slice_chain all = t.core.take_queue(t.slot).chain;
  t.core.write_done(t.slot, all, true);
  CHECK(check(t, t.slot).empty());

  event_batch out;
  t.core.close_slot(t.slot, make_error_code(ionet::errc::closed_by_user), out);
  CHECK_FALSE(t.core.writable_waiting());
  CHECK(check(t, t.slot).empty());
  CHECK_FALSE(t.core.queued_bytes(id));  // stale
}

TEST_CASE("writable: refused by the engine-wide cap, owed until others drain",
          "[unit][writable]") {
  ionet::options o = small_queues();
  o.max_total_queued_bytes = o.max_queued_bytes;  // one full queue in all
  ionet_test::core_with_connection t(o);
  const ionet::connection_id full = *t.id;
  const auto other = t.core.open_slot(0);
  REQUIRE(other);
  const std::uint32_t other_slot = ionet::detail::slot_of(*other);

  for (int i = 0; i < 4; ++i) REQUIRE_FALSE(send_one(t, full));
  // Nothing of its own queued, refused all the same: the engine is full.
  CHECK(send_one(t, *other) == ionet::errc::queue_full);
  CHECK(*t.core.queued_bytes(*other) == 0);
  CHECK(check(t, other_slot).empty());  // 4,016 of 4,016 queued

  slice_chain rest = t.core.take_queue(t.slot).chain;
  rest = write_some(t, t.slot, rest, 1);  // 3,504: at 3/4 or more
  CHECK(check(t, other_slot).empty());
  rest = write_some(t, t.slot, rest, 1);  // 2,992: under 3/4 (3,012)
  const auto got = check(t, other_slot);
  REQUIRE(got.size() == 1);
  CHECK(got[0].conn == *other);
  CHECK(check(t, t.slot).empty());  // never refused itself
  CHECK_FALSE(t.core.writable_waiting());
  t.core.write_done(t.slot, rest, true);
}
