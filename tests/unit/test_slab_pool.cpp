// Unit tests of common/slab_pool: single-slice take/give, exhaustion,
// all-or-nothing chains, counters, and a multi-threaded stress that checks
// no slice is ever held by two owners at once.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/slab_pool.hpp"

namespace {

using ionet::detail::no_slice;
using ionet::detail::slab_pool;
using ionet::detail::slice_chain;

// The slices of a chain in order, walking at most chain.count links.
std::vector<std::uint32_t> chain_slices(const slab_pool& pool,
                                        const slice_chain& c) {
  std::vector<std::uint32_t> out;
  std::uint32_t s = c.head;
  for (std::uint32_t i = 0; i < c.count && s != no_slice; ++i) {
    out.push_back(s);
    s = pool.next(s);
  }
  CHECK(s == no_slice);  // the tail ends the chain
  return out;
}

}  // namespace

TEST_CASE("slab_pool: a new pool is empty and reports its shape",
          "[unit][slab_pool]") {
  slab_pool pool(64, 10);
  CHECK(pool.slice_bytes() == 64);
  CHECK(pool.capacity() == 10);
  CHECK(pool.in_use() == 0);
  CHECK(pool.exhausted() == 0);
}

TEST_CASE("slab_pool: take hands out every slice once then no_slice",
          "[unit][slab_pool]") {
  slab_pool pool(32, 8);
  std::set<std::uint32_t> taken;
  for (std::uint32_t i = 0; i < 8; ++i) {
    const std::uint32_t s = pool.take();
    REQUIRE(s != no_slice);
    CHECK(s < 8);
    CHECK(taken.insert(s).second);  // never the same slice twice
    CHECK(pool.in_use() == i + 1);
    // A taken slice is clean: no data length, no link.
    CHECK(pool.length(s) == 0);
    CHECK(pool.next(s) == no_slice);
  }
  CHECK(pool.exhausted() == 0);
  CHECK(pool.take() == no_slice);
  CHECK(pool.exhausted() == 1);
  CHECK(pool.take() == no_slice);
  CHECK(pool.exhausted() == 2);
  CHECK(pool.in_use() == 8);

  // A slice given back is the one the next take finds.
  const std::uint32_t back = *taken.begin();
  pool.give(back);
  CHECK(pool.in_use() == 7);
  CHECK(pool.take() == back);
  CHECK(pool.in_use() == 8);

  for (std::uint32_t s : taken) pool.give(s);
  CHECK(pool.in_use() == 0);
  CHECK(pool.exhausted() == 2);  // a counter of events, not a level
}

TEST_CASE("slab_pool: slices are disjoint memory of slice_bytes each",
          "[unit][slab_pool]") {
  constexpr std::uint32_t size = 48;
  slab_pool pool(size, 5);
  std::vector<std::uint32_t> held;
  for (int i = 0; i < 5; ++i) held.push_back(pool.take());
  // Fill every byte of every slice with its own mark (ASan would catch an
  // overrun), then check no slice was overwritten by another.
  for (std::uint32_t s : held) {
    std::byte* p = pool.data(s);
    for (std::uint32_t i = 0; i < size; ++i)
      p[i] = static_cast<std::byte>(s + 1);
  }
  for (std::uint32_t s : held) {
    const std::byte* p = pool.data(s);
    for (std::uint32_t i = 0; i < size; ++i)
      REQUIRE(p[i] == static_cast<std::byte>(s + 1));
  }
  for (std::uint32_t a : held) {
    for (std::uint32_t b : held) {
      if (a == b) continue;
      const std::byte* pa = pool.data(a);
      const std::byte* pb = pool.data(b);
      CHECK((pa + size <= pb || pb + size <= pa));
    }
  }
  // length() is per slice and writable; take() clears it for the next user.
  pool.length(held[0]) = 17;
  pool.length(held[1]) = 3;
  CHECK(pool.length(held[0]) == 17);
  CHECK(pool.length(held[1]) == 3);
  pool.give(held[0]);
  CHECK(pool.take() == held[0]);
  CHECK(pool.length(held[0]) == 0);
  for (std::uint32_t s : held) pool.give(s);
  CHECK(pool.in_use() == 0);
}

TEST_CASE("slab_pool: an empty pool and give(no_slice)", "[unit][slab_pool]") {
  slab_pool pool(16, 0);
  CHECK(pool.capacity() == 0);
  CHECK(pool.take() == no_slice);
  CHECK(pool.exhausted() == 1);
  slice_chain c;
  CHECK_FALSE(pool.take_chain(1, c));
  CHECK(c.empty());
  pool.give(no_slice);  // ignored
  CHECK(pool.in_use() == 0);
  CHECK(pool.take() == no_slice);
}

TEST_CASE("slab_pool: take_chain links n slices", "[unit][slab_pool]") {
  slab_pool pool(16, 10);
  slice_chain c;
  REQUIRE(pool.take_chain(4, c));
  CHECK_FALSE(c.empty());
  CHECK(c.count == 4);
  CHECK(c.bytes == 0);
  CHECK(pool.in_use() == 4);
  const std::vector<std::uint32_t> slices = chain_slices(pool, c);
  REQUIRE(slices.size() == 4);
  CHECK(slices.front() == c.head);
  CHECK(slices.back() == c.tail);
  CHECK(std::set<std::uint32_t>(slices.begin(), slices.end()).size() == 4);
  for (std::uint32_t s : slices) CHECK(pool.length(s) == 0);

  SECTION("take_chain appends to a non-empty chain") {
    REQUIRE(pool.take_chain(3, c));
    CHECK(c.count == 7);
    CHECK(pool.in_use() == 7);
    const std::vector<std::uint32_t> all = chain_slices(pool, c);
    REQUIRE(all.size() == 7);
    CHECK(std::vector<std::uint32_t>(all.begin(), all.begin() + 4) == slices);
    CHECK(all.back() == c.tail);
    CHECK(std::set<std::uint32_t>(all.begin(), all.end()).size() == 7);
  }
  SECTION("take_chain(0) takes nothing and succeeds") {
    const slice_chain before = c;
    REQUIRE(pool.take_chain(0, c));
    CHECK(c.head == before.head);
    CHECK(c.tail == before.tail);
    CHECK(c.count == before.count);
    CHECK(pool.in_use() == 4);
  }
  SECTION("give_chain returns every slice") {
    pool.give_chain(c);
    CHECK(c.empty());
    CHECK(c.count == 0);
    CHECK(c.bytes == 0);
    CHECK(pool.in_use() == 0);
    // All ten are free again.
    slice_chain all;
    REQUIRE(pool.take_chain(10, all));
    CHECK(chain_slices(pool, all).size() == 10);
    pool.give_chain(all);
    CHECK(pool.in_use() == 0);
    pool.give_chain(all);  // an empty chain: nothing happens
    CHECK(pool.in_use() == 0);
  }
}

TEST_CASE("slab_pool: take_chain is all or nothing", "[unit][slab_pool]") {
  slab_pool pool(16, 6);
  slice_chain held;
  REQUIRE(pool.take_chain(4, held));
  const slice_chain before = held;
  const std::uint64_t exhausted_before = pool.exhausted();

  CHECK_FALSE(pool.take_chain(3, held));  // 2 free
  CHECK(pool.in_use() == 4);              // the 2 it got went back
  CHECK(pool.exhausted() == exhausted_before + 1);
  CHECK(held.head == before.head);
  CHECK(held.tail == before.tail);
  CHECK(held.count == before.count);

  slice_chain fresh;
  CHECK_FALSE(pool.take_chain(7, fresh));  // more than the pool has
  CHECK(fresh.empty());
  CHECK(pool.in_use() == 4);

  // Exactly what is left still goes.
  REQUIRE(pool.take_chain(2, fresh));
  CHECK(pool.in_use() == 6);
  CHECK(pool.take() == no_slice);
  pool.give_chain(fresh);
  pool.give_chain(held);
  CHECK(pool.in_use() == 0);
}

TEST_CASE(
    "slab_pool: slices come from the free stack first, then never-used "
    "ones, and a chain may take from both",
    "[unit][slab_pool]") {
  slab_pool pool(16, 8);
  const std::uint32_t a = pool.take();
  const std::uint32_t b = pool.take();
  const std::uint32_t c = pool.take();
  CHECK(std::set<std::uint32_t>{a, b, c} == std::set<std::uint32_t>{0, 1, 2});
  pool.give(a);
  pool.give(b);
  // Given back first, taken first: the pages already resident.
  CHECK(pool.take() == b);
  pool.give(b);

  // 2 on the free stack, 5 never used: 6 takes from both.
  slice_chain six;
  REQUIRE(pool.take_chain(6, six));
  const auto got = chain_slices(pool, six);
  CHECK(got.size() == 6);
  CHECK(std::set<std::uint32_t>(got.begin(), got.end()).size() == 6);
  CHECK(std::set<std::uint32_t>(got.begin(), got.end()).count(c) == 0);
  CHECK(pool.in_use() == 7);
  for (std::uint32_t s : got) CHECK(pool.length(s) == 0);

  // One left: a chain of 2 fails whole, and the one is still there.
  const std::uint64_t exhausted_before = pool.exhausted();
  slice_chain two;
  CHECK_FALSE(pool.take_chain(2, two));
  CHECK(two.empty());
  CHECK(pool.exhausted() == exhausted_before + 1);
  CHECK(pool.in_use() == 7);
  const std::uint32_t last = pool.take();
  CHECK(last != no_slice);
  CHECK(pool.take() == no_slice);
  pool.give(last);
  pool.give(c);
  pool.give_chain(six);
  CHECK(pool.in_use() == 0);
  // Every slice now on the free stack: a chain of all 8 comes from it.
  slice_chain all;
  REQUIRE(pool.take_chain(8, all));
  CHECK(chain_slices(pool, all).size() == 8);
  pool.give_chain(all);
}

TEST_CASE("slab_pool: append joins chains and sums their bytes",
          "[unit][slab_pool]") {
  slab_pool pool(16, 8);
  slice_chain a;
  slice_chain b;
  REQUIRE(pool.take_chain(2, a));
  REQUIRE(pool.take_chain(3, b));
  a.bytes = 20;
  b.bytes = 33;
  const std::uint32_t b_head = b.head;
  const std::uint32_t b_tail = b.tail;
  pool.append(a, b);
  CHECK(b.empty());
  CHECK(b.count == 0);
  CHECK(b.bytes == 0);
  CHECK(a.count == 5);
  CHECK(a.bytes == 53);
  CHECK(a.tail == b_tail);
  const std::vector<std::uint32_t> s = chain_slices(pool, a);
  REQUIRE(s.size() == 5);
  CHECK(s[2] == b_head);

  slice_chain empty;
  pool.append(a, empty);  // appending nothing changes nothing
  CHECK(a.count == 5);
  CHECK(a.bytes == 53);
  pool.append(empty, a);  // into an empty chain: it becomes the chain
  CHECK(a.empty());
  CHECK(empty.count == 5);
  CHECK(empty.bytes == 53);
  pool.give_chain(empty);
  CHECK(pool.in_use() == 0);
}

TEST_CASE("slab_pool: split_front cuts a chain after n slices",
          "[unit][slab_pool]") {
  slab_pool pool(16, 8);
  slice_chain c;
  REQUIRE(pool.take_chain(5, c));
  std::uint32_t len = 1;
  for (std::uint32_t s = c.head; s != no_slice; s = pool.next(s)) {
    pool.length(s) = len++;  // 1, 2, 3, 4, 5 bytes
  }
  c.bytes = 15;
  const std::vector<std::uint32_t> before = chain_slices(pool, c);

  slice_chain front = pool.split_front(c, 2);
  CHECK(front.count == 2);
  CHECK(front.bytes == 3);
  CHECK(c.count == 3);
  CHECK(c.bytes == 12);
  CHECK(chain_slices(pool, front) ==
        std::vector<std::uint32_t>{before[0], before[1]});
  CHECK(chain_slices(pool, c) ==
        std::vector<std::uint32_t>{before[2], before[3], before[4]});

  // Asking for more than there is takes the whole chain.
  slice_chain rest = pool.split_front(c, 10);
  CHECK(c.empty());
  CHECK(c.count == 0);
  CHECK(rest.count == 3);
  CHECK(rest.bytes == 12);
  CHECK(rest.tail == before[4]);

  // Exactly the length of the chain, too.
  slice_chain again = pool.split_front(rest, 3);
  CHECK(rest.empty());
  CHECK(again.count == 3);
  pool.give_chain(front);
  pool.give_chain(again);
  CHECK(pool.in_use() == 0);
}

TEST_CASE("slab_pool: set_next and next link slices by hand",
          "[unit][slab_pool]") {
  slab_pool pool(16, 3);
  const std::uint32_t a = pool.take();
  const std::uint32_t b = pool.take();
  pool.set_next(a, b);
  CHECK(pool.next(a) == b);
  CHECK(pool.next(b) == no_slice);
  slice_chain c;
  c.head = a;
  c.tail = b;
  c.count = 2;
  pool.give_chain(c);
  CHECK(pool.in_use() == 0);
  slice_chain all;
  REQUIRE(pool.take_chain(3, all));
  CHECK(pool.in_use() == 3);
  pool.give_chain(all);
}

TEST_CASE("slab_pool: stress with 4 threads never holds a slice twice",
          "[unit][slab_pool][stress]") {
  constexpr std::uint32_t slice_bytes = 32;
  constexpr std::uint32_t capacity =
      8;  // fewer than 4 threads x 3 held: they fight
  constexpr int threads = 4;
  constexpr int iterations = 100000;
  slab_pool pool(slice_bytes, capacity);
  // Who holds each slice. Relaxed on purpose: the flags must not order the
  // slice memory themselves, so TSan checks that the pool's hand-off does.
  std::unique_ptr<std::atomic<int>[]> owner(new std::atomic<int>[capacity]);
  for (std::uint32_t i = 0; i < capacity; ++i) owner[i].store(-1);
  // Catch2 assertions are not thread-safe: count failures, check after join.
  std::atomic<std::uint64_t> double_takes{0};
  std::atomic<std::uint64_t> bad_gives{0};
  std::atomic<std::uint64_t> bad_data{0};
  std::atomic<std::uint64_t> bad_state{0};
  std::atomic<std::uint64_t> got_slices{0};
  std::atomic<std::uint64_t> failed_takes{0};
  std::atomic<bool> go{false};
  constexpr auto relaxed = std::memory_order_relaxed;

  auto claim = [&](std::uint32_t s, int me) {
    int expected = -1;
    if (s >= capacity ||
        !owner[s].compare_exchange_strong(expected, me, relaxed)) {
      double_takes.fetch_add(1);
      return false;
    }
    if (pool.length(s) != 0) bad_state.fetch_add(1);
    // Mark the memory as ours; a second owner would overwrite it.
    std::byte* p = pool.data(s);
    for (std::uint32_t i = 0; i < slice_bytes; ++i)
      p[i] = static_cast<std::byte>(me);
    pool.length(s) = static_cast<std::uint32_t>(me) + 1;
    got_slices.fetch_add(1, relaxed);
    return true;
  };
  auto release = [&](std::uint32_t s, int me) {
    const std::byte* p = pool.data(s);
    for (std::uint32_t i = 0; i < slice_bytes; ++i) {
      if (p[i] != static_cast<std::byte>(me)) {
        bad_data.fetch_add(1);
        break;
      }
    }
    if (pool.length(s) != static_cast<std::uint32_t>(me) + 1)
      bad_data.fetch_add(1);
    int expected = me;
    if (!owner[s].compare_exchange_strong(expected, -1, relaxed))
      bad_gives.fetch_add(1);
  };

  auto worker = [&](int me) {
    while (!go.load()) std::this_thread::yield();
    std::uint32_t held[3];
    for (int it = 0; it < iterations; ++it) {
      if (it % 4 == 3) {
        // A chain of 3, all or nothing, given back in one operation.
        slice_chain c;
        if (!pool.take_chain(3, c)) {
          if (!c.empty()) bad_state.fetch_add(1);
          failed_takes.fetch_add(1, relaxed);
          continue;
        }
        if (c.count != 3) bad_state.fetch_add(1);
        std::uint32_t s = c.head;
        for (std::uint32_t& h : held) {
          h = s;
          s = s < capacity ? pool.next(s) : no_slice;
        }
        if (s != no_slice || held[2] != c.tail) bad_state.fetch_add(1);
        bool all = true;
        for (std::uint32_t h : held) all = claim(h, me) && all;
        if (all) {
          for (std::uint32_t h : held) release(h, me);
        }
        pool.give_chain(c);
      } else {
        // One or two single slices, given back in reverse order.
        const int n = 1 + it % 2;
        int got = 0;
        for (int i = 0; i < n; ++i) {
          const std::uint32_t s = pool.take();
          if (s == no_slice) {
            failed_takes.fetch_add(1, relaxed);
            break;
          }
          if (pool.next(s) != no_slice) bad_state.fetch_add(1);
          if (claim(s, me)) held[got++] = s;
        }
        for (int i = got - 1; i >= 0; --i) {
          release(held[i], me);
          pool.give(held[i]);
        }
      }
    }
  };

  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) workers.emplace_back(worker, t);
  go.store(true);
  for (auto& t : workers) t.join();

  CHECK(double_takes.load() == 0);
  CHECK(bad_gives.load() == 0);
  CHECK(bad_data.load() == 0);
  CHECK(bad_state.load() == 0);
  CHECK(got_slices.load() > 0);
  INFO("takes refused for exhaustion: " << failed_takes.load());
  CHECK(pool.in_use() == 0);
  // Each failed take, single or within take_chain, counts one exhaustion.
  CHECK(pool.exhausted() == failed_takes.load());
  // Nothing was lost or duplicated: the whole pool comes out, once each.
  std::set<std::uint32_t> all;
  for (std::uint32_t i = 0; i < capacity; ++i) {
    const std::uint32_t s = pool.take();
    REQUIRE(s != no_slice);
    all.insert(s);
  }
  CHECK(all.size() == capacity);
  CHECK(pool.take() == no_slice);
}
