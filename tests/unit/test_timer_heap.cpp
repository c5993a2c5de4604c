// timer_heap and task_inbox (common/tasks.hpp), on a clock the test moves:
// timers fire in deadline order and never before it, a periodic one is
// armed again a period on (skipping what it fell behind), cancel() keeps a
// timer from firing, and an inbox runs its functions in order, or drops
// them.
#include <chrono>
#include <memory>
#include <vector>

#include "catch.hpp"
#include "common/tasks.hpp"

namespace {

using ionet::detail::timer_heap;
using ionet::detail::timer_state;
using std::chrono::milliseconds;

// Fires what is due at `now`, running each timer; returns the next deadline.
timer_heap::clock::time_point fire_at(timer_heap& h,
                                      timer_heap::clock::time_point now) {
  return h.run_due(now,
                   [](const std::shared_ptr<timer_state>& t) { t->run(); });
}

}  // namespace

TEST_CASE("timer_heap: timers fire in deadline order, none early",
          "[unit][tasks]") {
  // A deadline is the clock at add() plus the delay: between `before` and
  // `after` plus it. Seconds apart, so a slow add() cannot blur them.
  timer_heap h;
  const auto before = timer_heap::clock::now();
  std::vector<int> order;
  const auto a =
      h.add(milliseconds(3000), milliseconds(0), [&] { order.push_back(3); });
  const auto b =
      h.add(milliseconds(1000), milliseconds(0), [&] { order.push_back(1); });
  const auto c =
      h.add(milliseconds(2000), milliseconds(0), [&] { order.push_back(2); });
  const auto after = timer_heap::clock::now();
  CHECK(a.earliest);
  CHECK(b.earliest);
  CHECK_FALSE(c.earliest);  // 2 s comes after b's 1 s
  CHECK(h.take_changed());
  CHECK_FALSE(h.take_changed());

  const auto next = fire_at(h, before + milliseconds(999));
  CHECK(order.empty());  // nothing is due yet
  CHECK(next >= before + milliseconds(1000));
  fire_at(h, after + milliseconds(2000));
  CHECK(order == std::vector<int>{1, 2});
  CHECK(fire_at(h, after + milliseconds(3000)) == timer_heap::none);
  CHECK(order == std::vector<int>{1, 2, 3});
  CHECK_FALSE(h.cancel(a.id));  // it has run
}

TEST_CASE("timer_heap: a periodic timer comes back until cancelled",
          "[unit][tasks]") {
  timer_heap h;
  int n = 0;
  const auto p = h.add(milliseconds(10), milliseconds(10), [&] { ++n; });
  const auto t0 = timer_heap::clock::now() + milliseconds(10);  // it is due
  auto next = fire_at(h, t0);
  CHECK(n == 1);
  CHECK(next > t0);
  // Far behind: one firing, not one per missed period.
  next = fire_at(h, t0 + milliseconds(1000));
  CHECK(n == 2);
  CHECK(next > t0 + milliseconds(1000));
  CHECK(h.cancel(p.id));
  CHECK_FALSE(h.cancel(p.id));
  CHECK(fire_at(h, t0 + milliseconds(5000)) == timer_heap::none);
  CHECK(n == 2);
}

TEST_CASE("timer_heap: a firing handed out before cancel() does nothing",
          "[unit][tasks]") {
  timer_heap h;
  int n = 0;
  const auto p = h.add(milliseconds(0), milliseconds(5), [&] { ++n; });
  std::vector<std::shared_ptr<timer_state>> handed;
  h.run_due(timer_heap::clock::now(),
            [&](const std::shared_ptr<timer_state>& t) {
              handed.push_back(t);  // as the pull model queues a task event
            });
  REQUIRE(handed.size() == 1);
  CHECK(h.cancel(p.id));
  handed[0]->run();
  CHECK(n == 0);
}

TEST_CASE("timer_heap: clear() drops every timer, and ids go on",
          "[unit][tasks]") {
  timer_heap h;
  auto token = std::make_shared<int>(0);
  const auto a = h.add(milliseconds(1), milliseconds(0), [token] {});
  h.add(milliseconds(1), milliseconds(1), [token] {});
  // Many set and cancelled: the heap lets go of their entries.
  for (int i = 0; i < 1000; ++i) {
    CHECK(h.cancel(h.add(milliseconds(60000), milliseconds(0), [] {}).id));
  }
  CHECK(token.use_count() == 3);
  h.clear();
  CHECK(token.use_count() == 1);
  CHECK_FALSE(h.cancel(a.id));
  const auto b = h.add(milliseconds(1), milliseconds(0), [] {});
  CHECK(static_cast<std::uint64_t>(b.id) > static_cast<std::uint64_t>(a.id));
  CHECK(fire_at(h, timer_heap::clock::now() + milliseconds(2)) ==
        timer_heap::none);
}

TEST_CASE("task_inbox: runs in order, wakes once, drops on stop",
          "[unit][tasks]") {
  ionet::detail::task_inbox inbox;
  std::vector<int> ran;
  CHECK(inbox.push([&] { ran.push_back(1); }));        // wake the thread
  CHECK_FALSE(inbox.push([&] { ran.push_back(2); }));  // already woken
  inbox.run(false);
  CHECK(ran == std::vector<int>{1, 2});
  auto token = std::make_shared<int>(0);
  CHECK(inbox.push([token, &ran] { ran.push_back(3); }));
  inbox.run(true);  // stopping: destroyed, not run
  CHECK(ran.size() == 2);
  CHECK(token.use_count() == 1);
  CHECK(inbox.push([token] {}));
  inbox.clear();
  CHECK(token.use_count() == 1);
}
