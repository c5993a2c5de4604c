// Unit tests of common/message_pool: buffers in power-of-two size classes,
// reuse through per-class free lists (a steady load stops allocating), the
// cache byte budget, and use from several threads.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/message_pool.hpp"

namespace {

using ionet::detail::message_pool;
using ionet::detail::msg_buffer;

std::size_t capacity_of(const msg_buffer* b) {
  return std::size_t{64} << b->size_class;
}

}  // namespace

TEST_CASE("message_pool: take gives a buffer of the smallest class that fits",
          "[unit][message_pool]") {
  message_pool pool;
  const std::uint32_t sizes[] = {
      0,      1,    63,   64,   65,    127,        128,
      129,    1000, 4096, 4097, 65536, (1u << 20), (1u << 20) + 1,
      3000000};
  for (std::uint32_t size : sizes) {
    INFO("size " << size);
    msg_buffer* b = pool.take(size);
    REQUIRE(b != nullptr);
    CHECK(b->size == size);
    CHECK(b->next == nullptr);
    CHECK(capacity_of(b) >= size);
    if (size > 64) CHECK(capacity_of(b) / 2 < size);  // not a class too big
    if (size <= 64) CHECK(b->size_class == 0);
    // The whole size is writable (ASan checks the bounds) and keeps its bytes.
    std::byte* p = b->data();
    for (std::uint32_t i = 0; i < size; ++i)
      p[i] = static_cast<std::byte>(i * 13u);
    bool intact = true;
    for (std::uint32_t i = 0; i < size; ++i)
      intact = intact && p[i] == static_cast<std::byte>(i * 13u);
    CHECK(intact);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % alignof(std::uint64_t) == 0);
    pool.give(b);
  }
  CHECK(pool.outstanding() == 0);
}

TEST_CASE("message_pool: class boundaries", "[unit][message_pool]") {
  message_pool pool;
  struct expect {
    std::uint32_t size;
    int size_class;
  };
  const expect cases[] = {{0, 0},
                          {64, 0},
                          {65, 1},
                          {128, 1},
                          {129, 2},
                          {256, 2},
                          {257, 3},
                          {4096, 6},
                          {4097, 7},
                          {1u << 20, 14},
                          {(1u << 20) + 1, 15}};
  for (const expect& e : cases) {
    INFO("size " << e.size);
    msg_buffer* b = pool.take(e.size);
    REQUIRE(b != nullptr);
    CHECK(int{b->size_class} == e.size_class);
    pool.give(b);
  }
}

TEST_CASE("message_pool: a buffer given back is reused for the same class",
          "[unit][message_pool]") {
  message_pool pool;
  CHECK(pool.allocations() == 0);
  CHECK(pool.outstanding() == 0);
  msg_buffer* a = pool.take(100);
  CHECK(pool.allocations() == 1);
  CHECK(pool.outstanding() == 1);
  pool.give(a);
  CHECK(pool.outstanding() == 0);

  // Same class (65..128 bytes), another size: the cached buffer, resized.
  msg_buffer* b = pool.take(120);
  CHECK(b == a);
  CHECK(b->size == 120);
  CHECK(pool.allocations() == 1);
  CHECK(pool.outstanding() == 1);

  // Another class: a new buffer.
  msg_buffer* c = pool.take(1000);
  CHECK(c != b);
  CHECK(pool.allocations() == 2);
  CHECK(pool.outstanding() == 2);
  pool.give(b);
  pool.give(c);
  pool.give(nullptr);  // ignored
  CHECK(pool.outstanding() == 0);

  // Two at once of one class: one from the cache, then one more allocation.
  msg_buffer* d = pool.take(70);
  msg_buffer* e = pool.take(70);
  CHECK(d != e);
  CHECK(pool.allocations() == 3);
  pool.give(d);
  pool.give(e);
  CHECK(pool.allocations() == 3);
}

TEST_CASE("message_pool: a steady load stops allocating after warm-up",
          "[unit][message_pool]") {
  message_pool pool;
  const std::uint32_t sizes[] = {0,   10,   64,   65,   200,
                                 513, 1500, 4096, 9000, 70000};
  std::vector<msg_buffer*> held;
  auto one_round = [&] {
    // Hold a few of each size at once, as a queue of unreleased events would.
    for (int copies = 0; copies < 3; ++copies) {
      for (std::uint32_t s : sizes) {
        msg_buffer* b = pool.take(s);
        REQUIRE(b != nullptr);
        held.push_back(b);
      }
    }
    for (msg_buffer* b : held) pool.give(b);
    held.clear();
  };
  one_round();
  const std::uint64_t warm = pool.allocations();
  CHECK(warm > 0);
  CHECK(warm <= 3 * std::size(sizes));
  for (int round = 0; round < 1000; ++round) one_round();
  CHECK(pool.allocations() == warm);
  CHECK(pool.outstanding() == 0);
}

TEST_CASE("message_pool: the cache keeps at most its byte budget",
          "[unit][message_pool]") {
  SECTION("budget 0: nothing is kept") {
    message_pool pool(0);
    for (int i = 0; i < 10; ++i) pool.give(pool.take(100));
    CHECK(pool.allocations() == 10);
    CHECK(pool.outstanding() == 0);
  }
  SECTION("budget of one 128-byte buffer") {
    message_pool pool(128);
    msg_buffer* a = pool.take(100);
    msg_buffer* b = pool.take(100);
    pool.give(a);  // kept
    pool.give(b);  // over budget: freed
    CHECK(pool.allocations() == 2);
    msg_buffer* c = pool.take(100);  // from the cache
    CHECK(pool.allocations() == 2);
    msg_buffer* d = pool.take(100);  // the cache is empty again
    CHECK(pool.allocations() == 3);
    pool.give(c);
    pool.give(d);
    // One 128-byte buffer is cached now; a 256-byte one would pass the
    // budget, so it is freed, not kept.
    msg_buffer* big = pool.take(200);
    pool.give(big);
    msg_buffer* big2 = pool.take(200);
    CHECK(pool.allocations() == 5);
    pool.give(big2);
  }
}

TEST_CASE("message_pool: threads taking and giving share the pool safely",
          "[unit][message_pool][stress]") {
  message_pool pool;
  constexpr int threads = 4;
  constexpr int iterations = 20000;
  std::atomic<std::uint64_t> corrupt{0};
  std::atomic<bool> go{false};
  auto worker = [&](int me) {
    while (!go.load()) std::this_thread::yield();
    msg_buffer* held[4] = {};
    for (int it = 0; it < iterations; ++it) {
      const std::uint32_t size =
          static_cast<std::uint32_t>((it * 37 + me * 11) % 300);
      msg_buffer*& slot = held[it % 4];
      if (slot) {
        // Still ours: the bytes we wrote are intact.
        const std::byte* p = slot->data();
        for (std::uint32_t i = 0; i < slot->size; ++i) {
          if (p[i] != static_cast<std::byte>(me)) {
            corrupt.fetch_add(1);
            break;
          }
        }
        pool.give(slot);
      }
      slot = pool.take(size);
      if (!slot) {
        corrupt.fetch_add(1);
        continue;
      }
      std::byte* p = slot->data();
      for (std::uint32_t i = 0; i < size; ++i)
        p[i] = static_cast<std::byte>(me);
    }
    for (msg_buffer* b : held) pool.give(b);
  };
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) workers.emplace_back(worker, i);
  go.store(true);
  for (auto& w : workers) w.join();
  CHECK(corrupt.load() == 0);
  CHECK(pool.outstanding() == 0);
  // Reuse worked across threads: far fewer allocations than takes.
  CHECK(pool.allocations() < std::uint64_t{threads} * iterations / 10);
}
