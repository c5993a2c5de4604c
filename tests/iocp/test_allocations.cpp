// IOCP backend: once started, the engine's threads allocate nothing but
// message buffers. The engine's own counter (allocations_after_start) sees
// only the message pool; this test counts every operator new made on a
// thread that is not the test's (the workers and the housekeeper), so it
// also sees what the backend's own containers do.
//
// The message pool does grow in this workload, by design: the backend
// decodes a read slice by slice (512 bytes), so a frame that straddles two
// slices is copied into a pool buffer, and a 64 KiB read holds up to ~128
// of them until it is delivered. The pool keeps them once made; its growth
// is what allocations_after_start reports, and everything else must be 0.
#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#include "support.hpp"

namespace {

std::atomic<bool> counting{false};
std::atomic<std::uint64_t> engine_allocations{0};
thread_local bool test_thread = false;

void* counted_alloc(std::size_t n) noexcept {
  if (counting.load(std::memory_order_relaxed) && !test_thread) {
    engine_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  return std::malloc(n ? n : 1);
}

}  // namespace

// Every allocating form the library and the standard library use goes
// through these (the array and nothrow forms included).
void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}

using namespace ionet_test;

namespace {

// Messages of one slice each (400 bytes + the header), `n` of them in one
// write: a 64 KiB read decodes ~160, and their echoes pile up into sends
// that gather more than 128 slices.
std::vector<std::byte> burst(int n, std::uint64_t seed) {
  std::vector<std::byte> out;
  for (int i = 0; i < n; ++i) {
    const auto f = frame(pattern(400, seed + static_cast<std::uint64_t>(i)));
    out.insert(out.end(), f.begin(), f.end());
  }
  return out;
}

struct counters {
  std::atomic<int> connected{0};
  std::atomic<int> closed{0};
  std::atomic<int> send_failures{0};
};

// One round of what a server meets: a burst of connects (the accept pool
// grows), bursts of echoes, clients that reset halfway through a frame,
// and garbage. Returns problems seen.
int workload(std::uint16_t port, int connects, int bursts, std::uint64_t seed) {
  int bad = 0;
  std::atomic<int> bad_in_threads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      test_thread = true;
      std::vector<ionet::framed_client> mine(
          static_cast<std::size_t>(connects / 4));
      for (auto& c : mine) {
        if (!connect_client(c, port)) bad_in_threads.fetch_add(1);
      }
      for (int b = 0; b < bursts && !mine.empty(); ++b) {
        auto& c = mine[static_cast<std::size_t>(b) % mine.size()];
        const std::uint64_t s = seed + static_cast<std::uint64_t>(t * 1000 + b);
        if (c.write_raw(burst(300, s))) bad_in_threads.fetch_add(1);
        for (int i = 0; i < 300; ++i) {
          std::vector<std::byte> back;
          if (c.read(back, wait_budget) ||
              !same_bytes(back,
                          pattern(400, s + static_cast<std::uint64_t>(i)))) {
            bad_in_threads.fetch_add(1);
            break;
          }
        }
      }
      for (auto& c : mine) c.close();
    });
  }
  for (auto& t : threads) t.join();
  bad += bad_in_threads.load();
  // Resets halfway through a frame, and garbage (a header far past
  // max_message_bytes), one client at a time.
  for (int i = 0; i < 20; ++i) {
    ionet::framed_client c;
    if (!connect_client(c, port)) {
      ++bad;
      continue;
    }
    const auto f = frame(pattern(400, seed + static_cast<std::uint64_t>(i)));
    if (i % 2 == 0) {
      c.write_raw(std::span(f).first(200));
      std::this_thread::sleep_for(20ms);
      c.reset();
    } else {
      std::vector<std::byte> garbage(64, std::byte{0xff});
      c.write_raw(garbage);
      read_until_closed(c);
    }
  }
  return bad;
}

}  // namespace

TEST_CASE(
    "iocp: warm engine threads allocate nothing through resets, garbage, "
    "large gathers and accept-pool growth",
    "[iocp][allocations]") {
  test_thread = true;
  counters k;
  ionet::options o = local_options();
  o.accept_depth = 4;  // a burst of connects outruns it: the pool grows
  o.handler = [&k](ionet::engine& eng, const ionet::event& e) {
    switch (e.type) {
      case ionet::event_type::connected:
        k.connected.fetch_add(1, std::memory_order_relaxed);
        break;
      case ionet::event_type::message:
        if (eng.send(e.conn, e.data))
          k.send_failures.fetch_add(1, std::memory_order_relaxed);
        break;
      case ionet::event_type::closed:
        k.closed.fetch_add(1, std::memory_order_relaxed);
        break;
      case ionet::event_type::writable:  // its sends are not refused
      case ionet::event_type::task:      // it posts nothing
        break;
    }
  };
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());

  // Warm-up, with no burst (no send gathers more than a few slices):
  // small echoes, resets and garbage, and 16 frames left partial at once.
  {
    ionet::framed_client c;
    REQUIRE(connect_client(c, eng->port()).ok());
    for (int i = 0; i < 50; ++i)
      REQUIRE_FALSE(echo_roundtrip(c, pattern(400, i)));
  }
  REQUIRE(workload(eng->port(), 8, 0, 1) == 0);
  {
    std::vector<ionet::framed_client> partial(16);
    const std::uint64_t base = eng->stats().bytes_received;
    const auto f = frame(pattern(400, 7));
    for (auto& c : partial) {
      REQUIRE(connect_client(c, eng->port()).ok());
      REQUIRE_FALSE(c.write_raw(std::span(f).first(200)));
    }
    REQUIRE(eventually(
        [&] { return eng->stats().bytes_received >= base + 16 * 200; }));
    for (auto& c : partial) c.reset();
  }
  REQUIRE(eventually([&] { return k.closed.load() == k.connected.load(); }));
  const auto warm = eng->stats();

  counting.store(true);
  const int bad = workload(eng->port(), 200, 8, 100000);
  REQUIRE(eventually([&] { return k.closed.load() == k.connected.load(); }));
  REQUIRE(eventually([&] { return eng->stats().pool_slices_in_use == 0; }));
  counting.store(false);
  const auto st = eng->stats();
  eng->stop();

  INFO("engine-thread allocations "
       << engine_allocations.load() << "; accept pool growths "
       << warm.accept_pool_growths << " -> " << st.accept_pool_growths
       << "; allocations_after_start " << warm.allocations_after_start << " -> "
       << st.allocations_after_start);
  CHECK(bad == 0);
  CHECK(k.send_failures.load() == 0);
  CHECK(st.accept_pool_growths > warm.accept_pool_growths);
  CHECK(st.frames_too_large > warm.frames_too_large);
  // Every allocation on an engine thread was a message buffer.
  CHECK(engine_allocations.load() ==
        st.allocations_after_start - warm.allocations_after_start);
}
