// Unit tests of common/connection_table: ids are slot index + generation,
// a stale id never resolves, the generation moves on at every recycle,
// exhaustion is reported, and retire kills an id before free reuses the slot.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/connection_table.hpp"
#include "ionet/events.hpp"

namespace {

using ionet::connection_id;
using ionet::detail::connection_table;
using ionet::detail::generation_of;
using ionet::detail::make_connection_id;
using ionet::detail::slot_of;

}  // namespace

TEST_CASE("connection_table: id helpers pack slot and generation",
          "[unit][connection_table]") {
  const connection_id id = make_connection_id(7, 3);
  CHECK(slot_of(id) == 7);
  CHECK(generation_of(id) == 3);
  CHECK(ionet::value_of(id) == ((std::uint64_t{3} << 32) | 7));
  const connection_id big = make_connection_id(0xfffffffeu, 0xffffffffu);
  CHECK(slot_of(big) == 0xfffffffeu);
  CHECK(generation_of(big) == 0xffffffffu);
  static_assert(slot_of(make_connection_id(1, 2)) == 1, "constexpr");
}

TEST_CASE("connection_table: acquire hands out every slot once then nullopt",
          "[unit][connection_table]") {
  connection_table t(5);
  CHECK(t.capacity() == 5);
  CHECK(t.in_use() == 0);
  std::set<std::uint32_t> slots;
  std::set<connection_id> ids;
  for (std::uint32_t i = 0; i < 5; ++i) {
    const std::optional<connection_id> id = t.acquire();
    REQUIRE(id.has_value());
    CHECK(slot_of(*id) < 5);
    CHECK(*id != connection_id{});
    CHECK(slots.insert(slot_of(*id)).second);
    CHECK(ids.insert(*id).second);
    // A live id resolves to its slot, and id_of names it.
    CHECK(t.resolve(*id) == std::optional<std::uint32_t>(slot_of(*id)));
    CHECK(t.id_of(slot_of(*id)) == *id);
    CHECK(t.in_use() == i + 1);
  }
  CHECK_FALSE(t.acquire().has_value());
  CHECK_FALSE(t.acquire().has_value());
  CHECK(t.in_use() == 5);
  // Exhaustion did not disturb the live ids.
  for (connection_id id : ids) CHECK(t.resolve(id).has_value());
}

TEST_CASE("connection_table: a table of no slots", "[unit][connection_table]") {
  connection_table t(0);
  CHECK_FALSE(t.acquire().has_value());
  CHECK_FALSE(t.resolve(make_connection_id(0, 1)).has_value());
}

TEST_CASE("connection_table: malformed and never-issued ids do not resolve",
          "[unit][connection_table]") {
  connection_table t(4);
  const connection_id id = *t.acquire();
  const std::uint32_t slot = slot_of(id);
  const std::uint32_t gen = generation_of(id);
  CHECK_FALSE(t.resolve(connection_id{}).has_value());
  CHECK_FALSE(t.resolve(make_connection_id(slot, 0)).has_value());
  CHECK_FALSE(t.resolve(make_connection_id(slot, gen + 1)).has_value());
  CHECK_FALSE(
      t.resolve(make_connection_id(slot, gen + 2)).has_value());  // a future id
  CHECK_FALSE(t.resolve(make_connection_id(slot, gen - 1)).has_value());
  CHECK_FALSE(
      t.resolve(make_connection_id(4, gen)).has_value());  // slot out of range
  CHECK_FALSE(t.resolve(make_connection_id(0xffffffffu, gen)).has_value());
  // Another slot with the same generation is a different id: it is not live.
  const std::uint32_t other = slot == 0 ? 1 : 0;
  CHECK_FALSE(t.resolve(make_connection_id(other, gen)).has_value());
  CHECK(t.resolve(id).has_value());
}

TEST_CASE("connection_table: a free slot's generation is no id",
          "[unit][connection_table]") {
  connection_table t(2);
  // Nothing issued yet: no id resolves, the value-initialised one least of
  // all (users may use it as "no connection").
  CHECK_FALSE(t.resolve(connection_id{}).has_value());
  CHECK_FALSE(t.resolve(make_connection_id(1, 0)).has_value());
  CHECK_FALSE(t.resolve(t.id_of(0)).has_value());
  CHECK_FALSE(t.resolve(t.id_of(1)).has_value());

  const connection_id id = *t.acquire();
  const std::uint32_t slot = slot_of(id);
  t.retire(slot);
  // Retired and freed slots: whatever id_of says now was never issued.
  CHECK_FALSE(t.resolve(t.id_of(slot)).has_value());
  CHECK_FALSE(
      t.resolve(make_connection_id(slot, generation_of(id) + 1)).has_value());
  t.free(slot);
  CHECK_FALSE(t.resolve(t.id_of(slot)).has_value());
  CHECK_FALSE(t.resolve(id).has_value());
}

TEST_CASE(
    "connection_table: a recycled id stays stale after its slot is reused",
    "[unit][connection_table]") {
  connection_table t(1);
  const connection_id first = *t.acquire();
  t.recycle(slot_of(first));
  CHECK(t.in_use() == 0);
  CHECK_FALSE(t.resolve(first).has_value());
  const connection_id second = *t.acquire();
  CHECK(slot_of(second) == slot_of(first));  // the only slot
  CHECK(second != first);
  CHECK(generation_of(second) != generation_of(first));
  CHECK(t.resolve(second) == std::optional<std::uint32_t>(slot_of(second)));
  CHECK_FALSE(t.resolve(first).has_value());
  CHECK(t.id_of(slot_of(second)) == second);
}

TEST_CASE(
    "connection_table: retire makes the id stale before free returns the slot",
    "[unit][connection_table]") {
  connection_table t(2);
  const connection_id a = *t.acquire();
  const connection_id b = *t.acquire();
  REQUIRE_FALSE(t.acquire().has_value());

  t.retire(slot_of(a));
  CHECK_FALSE(t.resolve(a).has_value());  // dead at once
  CHECK(t.resolve(b).has_value());        // others untouched
  CHECK(t.in_use() == 2);                 // the slot is still held
  CHECK_FALSE(t.acquire().has_value());   // and not handed out again yet
  CHECK_FALSE(t.resolve(a).has_value());

  t.free(slot_of(a));
  CHECK(t.in_use() == 1);
  const std::optional<connection_id> c = t.acquire();
  REQUIRE(c.has_value());
  CHECK(slot_of(*c) == slot_of(a));
  CHECK(*c != a);
  CHECK_FALSE(t.resolve(a).has_value());
  CHECK(t.resolve(*c).has_value());
  CHECK(t.resolve(b).has_value());
}

TEST_CASE(
    "connection_table: one slot recycled a million times never repeats an id",
    "[unit][connection_table][slow]") {
  constexpr std::uint32_t rounds = 1000000;
  connection_table t(3);
  // Keep the other slots live so the recycled one is always the same slot.
  const connection_id keep1 = *t.acquire();
  const connection_id keep2 = *t.acquire();
  std::vector<connection_id> ids;
  ids.reserve(rounds);
  const connection_id first = *t.acquire();
  const std::uint32_t slot = slot_of(first);
  ids.push_back(first);
  std::uint64_t failures =
      0;  // counted, so a bug fails once, not a million times
  for (std::uint32_t i = 1; i < rounds; ++i) {
    const connection_id prev = ids.back();
    t.recycle(slot);
    if (t.resolve(prev)) ++failures;
    const std::optional<connection_id> next = t.acquire();
    if (!next || slot_of(*next) != slot) {
      FAIL("acquire after recycle did not return the slot, round " << i);
    }
    // The generation only moves forward (until it wraps after 2^31 recycles).
    if (generation_of(*next) <= generation_of(prev)) ++failures;
    if (t.resolve(prev) || !t.resolve(*next)) ++failures;
    ids.push_back(*next);
  }
  CHECK(failures == 0);
  // No id repeats.
  std::vector<connection_id> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
  // Every old id is stale; only the newest resolves.
  std::uint64_t live_old = 0;
  for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
    if (t.resolve(ids[i])) ++live_old;
  }
  CHECK(live_old == 0);
  CHECK(t.resolve(ids.back()) == std::optional<std::uint32_t>(slot));
  CHECK(t.resolve(keep1).has_value());
  CHECK(t.resolve(keep2).has_value());
  CHECK(t.in_use() == 3);
}

TEST_CASE("connection_table: every slot recycled in turn keeps ids unique",
          "[unit][connection_table]") {
  constexpr std::uint32_t capacity = 64;
  connection_table t(capacity);
  std::set<connection_id> seen;
  std::vector<connection_id> live;
  for (std::uint32_t i = 0; i < capacity; ++i) live.push_back(*t.acquire());
  for (connection_id id : live) seen.insert(id);
  for (int round = 0; round < 50; ++round) {
    // Close every other connection, then refill.
    std::vector<connection_id> dead;
    for (std::size_t i = static_cast<std::size_t>(round % 2); i < live.size();
         i += 2) {
      dead.push_back(live[i]);
      t.recycle(slot_of(live[i]));
    }
    for (connection_id id : dead) REQUIRE_FALSE(t.resolve(id).has_value());
    for (std::size_t i = static_cast<std::size_t>(round % 2); i < live.size();
         i += 2) {
      const std::optional<connection_id> id = t.acquire();
      REQUIRE(id.has_value());
      REQUIRE(seen.insert(*id).second);
      live[i] = *id;
    }
    REQUIRE_FALSE(t.acquire().has_value());
    for (connection_id id : live) REQUIRE(t.resolve(id).has_value());
    for (connection_id id : dead) REQUIRE_FALSE(t.resolve(id).has_value());
  }
  CHECK(t.in_use() == capacity);
}

TEST_CASE(
    "connection_table: threads acquiring and recycling never share a slot",
    "[unit][connection_table][stress]") {
  constexpr std::uint32_t capacity = 3;  // fewer slots than threads
  constexpr int threads = 4;
  constexpr int iterations = 50000;
  connection_table t(capacity);
  std::unique_ptr<std::atomic<int>[]> owner(new std::atomic<int>[capacity]);
  for (std::uint32_t i = 0; i < capacity; ++i) owner[i].store(-1);
  std::atomic<std::uint64_t> shared{0};
  std::atomic<std::uint64_t> unresolved{0};
  std::atomic<std::uint64_t> stale_alive{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<bool> go{false};

  auto worker = [&](int me) {
    while (!go.load()) std::this_thread::yield();
    for (int it = 0; it < iterations; ++it) {
      const std::optional<connection_id> id = t.acquire();
      if (!id) {
        refused.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const std::uint32_t slot = slot_of(*id);
      int expected = -1;
      if (slot >= capacity ||
          !owner[slot].compare_exchange_strong(expected, me)) {
        shared.fetch_add(1);
        continue;
      }
      if (t.resolve(*id) != std::optional<std::uint32_t>(slot))
        unresolved.fetch_add(1);
      owner[slot].store(-1);
      if (it % 2) {
        t.recycle(slot);
      } else {
        t.retire(slot);
        if (t.resolve(*id)) stale_alive.fetch_add(1);
        t.free(slot);
      }
      if (t.resolve(*id)) stale_alive.fetch_add(1);
    }
  };
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) workers.emplace_back(worker, i);
  go.store(true);
  for (auto& w : workers) w.join();

  CHECK(shared.load() == 0);
  CHECK(unresolved.load() == 0);
  CHECK(stale_alive.load() == 0);
  CHECK(t.in_use() == 0);
  // Every slot is free again, once.
  std::set<std::uint32_t> slots;
  for (std::uint32_t i = 0; i < capacity; ++i) {
    const std::optional<connection_id> id = t.acquire();
    REQUIRE(id.has_value());
    slots.insert(slot_of(*id));
  }
  CHECK(slots.size() == capacity);
  CHECK_FALSE(t.acquire().has_value());
}

TEST_CASE(
    "connection_table: take() leaves the slot unresolvable until publish()",
    "[unit][connection_table]") {
  ionet::detail::connection_table t(2);
  const auto old_id = t.acquire();
  REQUIRE(old_id);
  t.recycle(ionet::detail::slot_of(*old_id));
  const auto slot = t.take();
  REQUIRE(slot);
  CHECK(*slot ==
        ionet::detail::slot_of(*old_id));  // the lowest free slot again
  CHECK_FALSE(t.resolve(*old_id));
  CHECK(t.in_use() == 1);
  const ionet::connection_id id = t.publish(*slot);
  CHECK(id != *old_id);
  CHECK(t.resolve(id) == slot);
  CHECK_FALSE(t.resolve(*old_id));
}
