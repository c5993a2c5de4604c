// Unit tests of common/event_queue: order, batch pops, timeouts, the bound on
// message events (past it a connection's events are held back, in order,
// and come in as pop makes room; a push never waits), control events of
// other connections that are never held, and close(): queued and held
// events still come out, later messages are dropped through the callback,
// and task events (engine::post, timers) are taken out.
// Every wait here is bounded, so a bug fails instead of hanging.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/event_queue.hpp"
#include "ionet/events.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using ionet::event;
using ionet::event_type;
using ionet::detail::event_queue;

// An id as the numbers these tests use.
std::uint64_t id_of(std::uint32_t slot, std::uint32_t generation) {
  return ionet::value_of(ionet::detail::make_connection_id(slot, generation));
}

// Connection slots of every queue here: the ids used are below it.
constexpr std::uint32_t slots = 8192;

// Ids here are plain numbers (slots at generation 0): the queue only
// looks at their slot.
event make_event(event_type type, std::uint64_t conn) {
  event e;
  e.type = type;
  e.conn = ionet::connection_id{conn};
  return e;
}
event message(std::uint64_t conn) {
  return make_event(event_type::message, conn);
}
event connected(std::uint64_t conn) {
  return make_event(event_type::connected, conn);
}
event closed(std::uint64_t conn) {
  return make_event(event_type::closed, conn);
}

// Records dropped events; called on the pusher's thread.
struct drop_log {
  std::mutex lock;
  std::vector<std::uint64_t> conns;
  void operator()(event& e) {
    std::lock_guard g(lock);
    conns.push_back(ionet::value_of(e.conn));
  }
  std::vector<std::uint64_t> get() {
    std::lock_guard g(lock);
    return conns;
  }
};

// A push that must never reach the drop callback.
struct no_drop {
  std::atomic<int>* count;
  void operator()(event&) const { count->fetch_add(1); }
};

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5s) {
  const auto deadline = clock_type::now() + limit;
  while (!pred()) {
    if (clock_type::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Pushes a batch on its own thread; `done` tells when push() returned.
class pusher {
 public:
  pusher(event_queue& q, std::vector<event> batch, drop_log& drops)
      : batch_(std::move(batch)), thread_([this, &q, &drops] {
          q.push(batch_, drops);
          done_.store(true);
        }) {}
  ~pusher() {
    if (thread_.joinable()) thread_.join();
  }
  bool done() const { return done_.load(); }

 private:
  std::vector<event> batch_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Pushes a batch that must not wait, on another thread so a queue that
// wrongly waits fails the test instead of hanging it.
bool push_without_waiting(event_queue& q, std::vector<event> batch,
                          drop_log& drops) {
  pusher p(q, std::move(batch), drops);
  const bool finished = eventually([&] { return p.done(); }, 2s);
  if (!finished) q.close();  // unblock it so the test ends
  return finished;
}

std::vector<std::uint64_t> conns_of(std::span<const event> events) {
  std::vector<std::uint64_t> out;
  for (const event& e : events) out.push_back(ionet::value_of(e.conn));
  return out;
}

}  // namespace

TEST_CASE("event_queue: events come out in the order they went in",
          "[unit][event_queue]") {
  event_queue q(1000, slots);
  std::atomic<int> drops{0};
  const std::vector<event> a = {connected(1), message(2), message(3)};
  const std::vector<event> b = {closed(4)};
  const std::vector<event> c = {message(5), connected(6), message(7),
                                closed(8)};
  q.push(a, no_drop{&drops});
  q.push(b, no_drop{&drops});
  q.push(std::span<const event>(), no_drop{&drops});  // nothing
  q.push(c, no_drop{&drops});
  CHECK(q.size() == 8);
  std::vector<event> out(3);
  std::vector<std::uint64_t> got;
  std::vector<event_type> types;
  while (std::size_t n = q.pop(out, 0ms)) {
    for (std::size_t i = 0; i < n; ++i) {
      got.push_back(ionet::value_of(out[i].conn));
      types.push_back(out[i].type);
    }
  }
  CHECK(got == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(types ==
        std::vector<event_type>{event_type::connected, event_type::message,
                                event_type::message, event_type::closed,
                                event_type::message, event_type::connected,
                                event_type::message, event_type::closed});
  CHECK(q.size() == 0);
  CHECK(drops.load() == 0);
}

TEST_CASE("event_queue: pop takes at most out.size() events",
          "[unit][event_queue]") {
  event_queue q(100, slots);
  std::atomic<int> drops{0};
  std::vector<event> batch;
  for (std::uint64_t i = 0; i < 10; ++i) batch.push_back(message(i));
  q.push(batch, no_drop{&drops});
  std::vector<event> out(4);
  CHECK(q.pop(out, 0ms) == 4);
  CHECK(conns_of(out) == std::vector<std::uint64_t>{0, 1, 2, 3});
  CHECK(q.size() == 6);
  CHECK(q.pop(out, 0ms) == 4);
  CHECK(conns_of(out) == std::vector<std::uint64_t>{4, 5, 6, 7});
  CHECK(q.pop(out, 0ms) == 2);
  CHECK(conns_of(std::span<const event>(out).first(2)) ==
        std::vector<std::uint64_t>{8, 9});
  CHECK(q.pop(out, 0ms) == 0);
  CHECK(q.pop(std::span<event>(), 0ms) == 0);
}

TEST_CASE("event_queue: pop on an empty queue times out with 0",
          "[unit][event_queue]") {
  event_queue q(10, slots);
  std::vector<event> out(4);
  SECTION("timeout 0 returns at once") {
    const auto t0 = clock_type::now();
    CHECK(q.pop(out, 0ms) == 0);
    CHECK(clock_type::now() - t0 < 1s);
  }
  SECTION("a timeout is waited out") {
    const auto t0 = clock_type::now();
    CHECK(q.pop(out, 50ms) == 0);
    const auto waited = clock_type::now() - t0;
    CHECK(waited >= 40ms);  // a little slack for coarse clocks
    CHECK(waited < 5s);
  }
}

TEST_CASE("event_queue: a waiting pop wakes when events arrive",
          "[unit][event_queue]") {
  event_queue q(10, slots);
  std::atomic<int> drops{0};
  std::thread producer([&] {
    std::this_thread::sleep_for(30ms);
    const std::vector<event> batch = {connected(1), message(2)};
    q.push(batch, no_drop{&drops});
  });
  std::vector<event> out(4);
  const auto t0 = clock_type::now();
  std::size_t n = q.pop(out, 10s);
  const auto waited = clock_type::now() - t0;
  producer.join();
  CHECK(waited < 5s);
  // The batch was appended under one lock: both are there.
  CHECK(n == 2);
  CHECK(conns_of(std::span<const event>(out).first(n)) ==
        std::vector<std::uint64_t>{1, 2});
}

TEST_CASE(
    "event_queue: past the bound a connection's events are held back, "
    "in order, and come in as pop makes room",
    "[unit][event_queue]") {
  event_queue q(2, slots);
  drop_log drops;
  const auto a = [](std::uint32_t seq) { return message(id_of(1, seq)); };
  // Connection 1's first two messages fill the queue; the rest of its
  // events, its closed event too, wait behind them. A push never waits.
  std::vector<event> batch = {a(0), a(1), a(2), a(3)};
  batch.push_back(closed(id_of(1, 99)));
  REQUIRE(push_without_waiting(q, batch, drops));
  CHECK(q.size() == 5);
  CHECK(q.backed_up(1));
  CHECK(q.backed_up(2));  // full: connection 2's next message would wait too
  // Another connection's connected event is not held: it has nothing held.
  REQUIRE(push_without_waiting(q, {connected(id_of(2, 0))}, drops));

  std::vector<event> out(1);
  std::vector<std::uint64_t> got;
  while (q.pop(out, 0ms) == 1) {
    got.push_back(ionet::value_of(out[0].conn));
    CHECK(q.size() == 6 - got.size());
  }
  // Its held events came in as room was made, after what was queued then.
  CHECK(got == std::vector<std::uint64_t>{id_of(1, 0), id_of(1, 1), id_of(2, 0),
                                          id_of(1, 2), id_of(1, 3),
                                          id_of(1, 99)});
  CHECK_FALSE(q.backed_up(1));
  CHECK_FALSE(q.backed_up(2));
  CHECK(drops.get().empty());
}

TEST_CASE("event_queue: held connections come in oldest first, each in order",
          "[unit][event_queue]") {
  event_queue q(1, slots);
  drop_log drops;
  auto m = [](std::uint32_t slot, std::uint32_t seq) {
    return message(id_of(slot, seq));
  };
  REQUIRE(push_without_waiting(q, {m(5, 0)}, drops));  // full
  REQUIRE(push_without_waiting(q, {m(7, 0), m(7, 1)}, drops));
  REQUIRE(push_without_waiting(q, {m(6, 0)}, drops));
  REQUIRE(push_without_waiting(q, {m(7, 2)}, drops));  // behind its own
  std::vector<event> out(8);
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 10; ++i) {
    const std::size_t n = q.pop(out, 0ms);
    for (std::size_t j = 0; j < n; ++j)
      got.push_back(ionet::value_of(out[j].conn));
  }
  CHECK(got == std::vector<std::uint64_t>{
                   ionet::value_of(m(5, 0).conn), ionet::value_of(m(7, 0).conn),
                   ionet::value_of(m(7, 1).conn), ionet::value_of(m(7, 2).conn),
                   ionet::value_of(m(6, 0).conn)});
  // One pop takes them all: each message taken makes room for the next.
  CHECK(q.size() == 0);
}

TEST_CASE("event_queue: connected and closed events never wait",
          "[unit][event_queue]") {
  event_queue q(1, slots);
  drop_log drops;
  const std::vector<event> one = {message(1)};
  REQUIRE(push_without_waiting(q, one, drops));  // full now
  std::vector<event> control;
  for (std::uint64_t i = 0; i < 3000; ++i) {
    control.push_back(i % 2 ? closed(10 + i) : connected(10 + i));
  }
  CHECK(push_without_waiting(q, control, drops));
  CHECK(q.size() == 3001);
  std::vector<event> out(4000);
  REQUIRE(q.pop(out, 0ms) == 3001);
  CHECK(ionet::value_of(out[0].conn) == 1);
  CHECK(conns_of(std::span<const event>(out).subspan(1, 3000)) ==
        conns_of(control));
  CHECK(drops.get().empty());
}

TEST_CASE(
    "event_queue: close queues what is held, drops later messages, and pop "
    "drains the rest then 0",
    "[unit][event_queue]") {
  event_queue q(2, slots);
  drop_log drops;
  const std::vector<event> first = {connected(1), message(2), message(3)};
  REQUIRE(push_without_waiting(q, first, drops));  // messages at capacity
  // 4 and 6 find the queue full and are held; 5 and 7 are other
  // connections' control events and go in at once.
  REQUIRE(push_without_waiting(
      q, {message(4), closed(5), message(6), connected(7)}, drops));
  CHECK(q.size() == 7);
  q.close();
  CHECK(drops.get().empty());

  // After close, messages go straight to the drop callback; others queue.
  const std::vector<event> late = {message(8), closed(9)};
  q.push(late, drops);
  CHECK(drops.get() == std::vector<std::uint64_t>{8});

  std::vector<event> out(2);
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 10; ++i) {
    const std::size_t n = q.pop(out, 10s);  // closed: never waits
    if (n == 0) break;
    for (std::size_t j = 0; j < n; ++j)
      got.push_back(ionet::value_of(out[j].conn));
  }
  CHECK(got == std::vector<std::uint64_t>{1, 2, 3, 5, 7, 4, 6, 9});
  const auto t0 = clock_type::now();
  CHECK(q.pop(out, 10s) == 0);
  CHECK(clock_type::now() - t0 < 2s);
  CHECK(q.size() == 0);
}

TEST_CASE("event_queue: close wakes a waiting pop", "[unit][event_queue]") {
  event_queue q(4, slots);
  std::thread closer([&] {
    std::this_thread::sleep_for(30ms);
    q.close();
  });
  std::vector<event> out(4);
  const auto t0 = clock_type::now();
  CHECK(q.pop(out, 10s) == 0);
  CHECK(clock_type::now() - t0 < 5s);
  closer.join();
}

TEST_CASE("event_queue: reopen accepts messages and waits again",
          "[unit][event_queue]") {
  event_queue q(4, slots);
  drop_log drops;
  q.close();
  const std::vector<event> dropped = {message(1)};
  q.push(dropped, drops);
  CHECK(drops.get().size() == 1);
  q.reopen();
  const std::vector<event> kept = {message(2)};
  q.push(kept, drops);
  CHECK(drops.get().size() == 1);
  std::vector<event> out(4);
  REQUIRE(q.pop(out, 0ms) == 1);
  CHECK(ionet::value_of(out[0].conn) == 2);
  // Open again: an empty pop waits for its timeout.
  const auto t0 = clock_type::now();
  CHECK(q.pop(out, 30ms) == 0);
  CHECK(clock_type::now() - t0 >= 20ms);
}

TEST_CASE("event_queue: drain takes everything and frees the message bound",
          "[unit][event_queue]") {
  event_queue q(3, slots);
  drop_log drops;
  const std::vector<event> batch = {connected(1), message(2), message(3),
                                    closed(4), message(5)};
  REQUIRE(push_without_waiting(q, batch, drops));
  std::vector<std::uint64_t> got;
  q.drain([&](event& e) { got.push_back(ionet::value_of(e.conn)); });
  CHECK(got == std::vector<std::uint64_t>{1, 2, 3, 4, 5});
  CHECK(q.size() == 0);
  // The bound counts from zero again: three messages fit without waiting.
  CHECK(push_without_waiting(q, {message(6), message(7), message(8)}, drops));
  CHECK(q.size() == 3);
  CHECK(drops.get().empty());
}

TEST_CASE("event_queue: order survives the ring growing while wrapped",
          "[unit][event_queue]") {
  event_queue q(100000, slots);
  std::atomic<int> drops{0};
  std::uint64_t next_in = 0;
  std::uint64_t next_out = 0;
  std::vector<event> out(333);
  bool in_order = true;
  auto push_n = [&](std::size_t n) {
    std::vector<event> batch;
    for (std::size_t i = 0; i < n; ++i) {
      batch.push_back(next_in % 3 ? message(next_in) : closed(next_in));
      ++next_in;
    }
    q.push(batch, no_drop{&drops});
  };
  auto pop_n = [&](std::size_t n) {
    while (n) {
      const std::size_t got =
          q.pop(std::span<event>(out).first(std::min(n, out.size())), 0ms);
      if (got == 0) break;
      for (std::size_t i = 0; i < got; ++i)
        in_order = in_order && ionet::value_of(out[i].conn) == next_out++;
      n -= got;
    }
  };
  // Head moves off 0, then pushes past the first ring size (and the next).
  push_n(1000);
  pop_n(700);
  push_n(1500);
  pop_n(100);
  push_n(3000);
  CHECK(q.size() == next_in - next_out);
  pop_n(next_in - next_out);
  CHECK(in_order);
  CHECK(next_out == 5500);
  CHECK(q.size() == 0);
  CHECK(drops.load() == 0);
}

TEST_CASE("event_queue: producers and a consumer under load lose nothing",
          "[unit][event_queue][stress]") {
  constexpr int producers = 3;
  constexpr int per_producer = 20000;
  event_queue q(64, slots);
  std::atomic<int> drops{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&q, &drops, p] {
      std::vector<event> batch;
      for (int i = 0; i < per_producer; ++i) {
        // One connection per producer: its slot, and the sequence as the
        // generation (order is kept per connection).
        const auto conn =
            id_of(static_cast<std::uint32_t>(p), static_cast<std::uint32_t>(i));
        batch.push_back(i % 10 == 0 ? connected(conn) : message(conn));
        if (batch.size() == static_cast<std::size_t>(1 + i % 7)) {
          q.push(batch, no_drop{&drops});
          batch.clear();
        }
      }
      q.push(batch, no_drop{&drops});
    });
  }
  std::vector<std::uint32_t> next(producers, 0);
  bool in_order = true;
  std::size_t received = 0;
  std::vector<event> out(50);
  // This takes well under a second; a consumer left asleep with events
  // queued (a lost wake-up) would show as pops that sit out their timeout.
  const auto t0 = clock_type::now();
  const auto deadline = t0 + 5s;
  while (received < std::size_t{producers} * per_producer &&
         clock_type::now() < deadline) {
    const std::size_t n = q.pop(out, 1s);
    for (std::size_t i = 0; i < n; ++i) {
      const auto p =
          static_cast<std::size_t>(ionet::detail::slot_of(out[i].conn));
      const auto seq = ionet::detail::generation_of(out[i].conn);
      if (p >= next.size() || seq != next[p]) {
        in_order = false;
      } else {
        ++next[p];
      }
    }
    received += n;
  }
  const auto took = clock_type::now() - t0;
  if (received < std::size_t{producers} * per_producer) q.close();
  for (auto& t : threads) t.join();
  CHECK(took < 5s);
  CHECK(received == std::size_t{producers} * per_producer);
  CHECK(in_order);  // each producer's events stay in its order
  if (received == std::size_t{producers} * per_producer)
    CHECK(drops.load() == 0);
}

TEST_CASE(
    "event_queue: a connection's task event waits behind its held events, "
    "and close() takes task events out",
    "[unit][event_queue]") {
  event_queue q(1, slots);
  drop_log drops;
  const auto task = [](std::uint64_t conn) {
    return make_event(event_type::task, conn);
  };
  // The second message is held; a task of its connection comes after it,
  // a task of no connection at once.
  REQUIRE(push_without_waiting(q, {message(id_of(1, 0)), message(id_of(1, 1))},
                               drops));
  CHECK(q.push_task(task(id_of(1, 2))));
  CHECK(q.push_task(task(0)));
  std::vector<event> out(8);
  const std::size_t n = q.pop(out, 0ms);
  CHECK(conns_of(std::span(out.data(), n)) ==
        std::vector<std::uint64_t>{id_of(1, 0), 0, id_of(1, 1), id_of(1, 2)});

  CHECK(q.push_task(task(0)));
  REQUIRE(push_without_waiting(q, {connected(id_of(3, 0))}, drops));
  CHECK(q.push_task(task(id_of(3, 1))));
  std::vector<event> tasks;
  q.close(tasks);
  CHECK(conns_of(tasks) == std::vector<std::uint64_t>{0, id_of(3, 1)});
  CHECK_FALSE(q.push_task(task(0)));  // closed: the caller drops it
  REQUIRE(q.pop(out, 0ms) == 1);
  CHECK(out[0].type == event_type::connected);
  CHECK(drops.get().empty());
}
