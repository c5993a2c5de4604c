// Work and timers on engine threads (engine::post, after, every, cancel):
// the rules, once for every backend. A backend only says how its OS wakes
// a thread for posted work (a loop's wake-up, a completion packet) and
// arms the earliest deadline (a uv_timer, the wait of an io_uring loop,
// the IOCP housekeeper's wait).
//
// Inline model: a backend runs posted functions from a task_inbox on the
// thread that serves their connection, and timers from the timer_heap on
// one thread of its choice. Pull model: a posted function, and each timer
// firing, is a task event in the event queue (engine_core::push_task),
// run by the user's thread (event::run()); no backend is involved but for
// the timers' deadline.
//
// Once the engine stops, nothing posted or armed runs any more: the inbox
// and the heap are dropped (their functions destroyed), and so are task
// events nobody polled.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "ionet/engine.hpp"

namespace ionet::detail {

// Runs a user's function on an engine thread. A task must not throw:
// one that does ends the process here (noexcept), as an inline handler's
// exception would, rather than unwind through an engine thread.
inline void run_task(const task& fn) noexcept { fn(); }

// A timer, shared by the heap and its firings in flight: cancel() marks
// it, and a firing that has not begun yet does nothing.
struct timer_state {
  task fn;
  std::chrono::milliseconds period{0};  // 0: once
  std::atomic<bool> cancelled{false};
  // Pull model, periodic: a firing waits in the event queue. The next is
  // skipped meanwhile, so a slow poller does not pile them up.
  std::atomic<bool> waiting{false};

  void run() const noexcept {
    if (!cancelled.load(std::memory_order_acquire)) run_task(fn);
  }
};

// What a task event holds (event_access::owner), freed by release().
struct task_node {
  task fn;                             // post()
  std::shared_ptr<timer_state> timer;  // or a timer's firing
  task_node(task f, std::shared_ptr<timer_state> t) noexcept
      : fn(std::move(f)), timer(std::move(t)) {}
  ~task_node() {
    if (timer) timer->waiting.store(false, std::memory_order_release);
  }
  task_node(const task_node&) = delete;
  task_node& operator=(const task_node&) = delete;
  void run() const noexcept {
    if (timer) {
      timer->run();
    } else {
      run_task(fn);
    }
  }
};

// Functions posted to one engine thread (or, on IOCP, one connection),
// run in the order they came.
class task_inbox {
 public:
  // Any thread. True when the inbox was empty: the caller wakes the
  // thread that runs it (one wake-up serves what comes before it looks).
  [[nodiscard]] bool push(task fn);
  // The owning thread: runs what was posted before the call, in order, or
  // with `drop` (the engine is stopping) destroys it unrun. A cheap look
  // when nothing was posted; false then.
  bool run(bool drop);
  // Destroys what is left (the engine stopped).
  void clear() noexcept;

 private:
  std::mutex lock_;
  std::vector<task> items_;  // under lock_
  std::vector<task> work_;   // items_, being run
  std::atomic<bool> pending_{false};
};

// An engine's timers: a min-heap of deadlines, cancelled by id (lazily: a
// cancelled timer's heap entry is skipped when it comes up). Any thread
// adds and cancels; one thread runs them (run_due).
class timer_heap {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr clock::time_point none = clock::time_point::max();

  struct added {
    timer_id id{};
    bool earliest = false;  // the thread that runs them must re-arm
  };
  added add(std::chrono::milliseconds delay, std::chrono::milliseconds period,
            task fn);
  // True when the timer was pending (not run, if once; not cancelled).
  bool cancel(timer_id id) noexcept;

  // The timer thread: fire(timer) for each timer due at `now`, earliest
  // first; a periodic one is armed again a period after its last due
  // time (or after `now`, if it fell that far behind). Returns the next
  // deadline (`none` when there is none).
  template <class Fire>
  clock::time_point run_due(clock::time_point now, Fire&& fire);
  // Whether add() made a new earliest deadline since the last look: the
  // timer thread arms its wait again (a cheap look).
  bool take_changed() noexcept {
    return changed_.load(std::memory_order_relaxed) &&
           changed_.exchange(false, std::memory_order_acq_rel);
  }
  // Drops every timer (the engine stopped). Ids go on.
  void clear() noexcept;

 private:
  struct entry {
    clock::time_point due;
    std::uint64_t id;
  };
  // pop_heap/push_heap keep the earliest at the front with this order.
  static bool later(const entry& a, const entry& b) noexcept {
    return a.due > b.due;
  }
  clock::time_point next_locked() const noexcept {
    return heap_.empty() ? none : heap_.front().due;
  }

  mutable std::mutex lock_;
  std::vector<entry> heap_;
  std::unordered_map<std::uint64_t, std::shared_ptr<timer_state>> live_;
  std::uint64_t next_id_ = 1;
  std::atomic<bool> changed_{false};
};

template <class Fire>
timer_heap::clock::time_point timer_heap::run_due(clock::time_point now,
                                                  Fire&& fire) {
  for (;;) {
    std::shared_ptr<timer_state> t;
    {
      std::lock_guard g(lock_);
      if (heap_.empty() || heap_.front().due > now) return next_locked();
      std::pop_heap(heap_.begin(), heap_.end(), later);
      const entry e = heap_.back();
      heap_.pop_back();
      const auto it = live_.find(e.id);
      if (it == live_.end()) continue;  // cancelled
      t = it->second;
      if (t->period.count() > 0) {
        clock::time_point due = e.due + t->period;
        if (due <= now) due = now + t->period;
        heap_.push_back({due, e.id});
        std::push_heap(heap_.begin(), heap_.end(), later);
      } else {
        live_.erase(it);
      }
    }
    fire(t);
  }
}

}  // namespace ionet::detail
