#include "common/tasks.hpp"

#include <algorithm>

#include "common/event_access.hpp"

namespace ionet {

void event::run() const {
  if (type != event_type::task) return;
  if (const void* node = detail::event_access::owner(*this))
    static_cast<const detail::task_node*>(node)->run();
}

}  // namespace ionet

namespace ionet::detail {

bool task_inbox::push(task fn) {
  std::lock_guard g(lock_);
  const bool first = items_.empty();
  items_.push_back(std::move(fn));
  pending_.store(true, std::memory_order_release);
  return first;
}

bool task_inbox::run(bool drop) {
  if (!pending_.load(std::memory_order_acquire)) return false;
  {
    std::lock_guard g(lock_);
    work_.swap(items_);
    pending_.store(false, std::memory_order_relaxed);
  }
  // Tasks posted meanwhile (a task posting another) wait for the next
  // round: their push woke the thread again.
  if (!drop) {
    for (const task& fn : work_) run_task(fn);
  }
  work_.clear();
  return true;
}

void task_inbox::clear() noexcept {
  std::vector<task> gone;
  {
    std::lock_guard g(lock_);
    gone.swap(items_);
    pending_.store(false, std::memory_order_relaxed);
  }
  work_.clear();
}

timer_heap::added timer_heap::add(std::chrono::milliseconds delay,
                                  std::chrono::milliseconds period, task fn) {
  auto t = std::make_shared<timer_state>();
  t->fn = std::move(fn);
  t->period = period;
  const clock::time_point due =
      clock::now() + std::max(delay, std::chrono::milliseconds(0));
  std::lock_guard g(lock_);
  added a;
  a.id = timer_id{next_id_++};
  a.earliest = due < next_locked();
  live_.emplace(static_cast<std::uint64_t>(a.id), std::move(t));
  heap_.push_back({due, static_cast<std::uint64_t>(a.id)});
  std::push_heap(heap_.begin(), heap_.end(), later);
  if (a.earliest) changed_.store(true, std::memory_order_release);
  return a;
}

bool timer_heap::cancel(timer_id id) noexcept {
  std::shared_ptr<timer_state> gone;  // its function dies outside the lock
  std::lock_guard g(lock_);
  const auto it = live_.find(static_cast<std::uint64_t>(id));
  if (it == live_.end()) return false;
  it->second->cancelled.store(true, std::memory_order_release);
  gone = std::move(it->second);
  live_.erase(it);
  // Cancelled entries wait in the heap for their deadline; many long
  // timers set and cancelled would grow it: drop them now and then.
  if (heap_.size() > 64 && heap_.size() > 2 * live_.size()) {
    std::erase_if(heap_, [this](const entry& e) { return !live_.count(e.id); });
    std::make_heap(heap_.begin(), heap_.end(), later);
  }
  return true;
}

void timer_heap::clear() noexcept {
  std::unordered_map<std::uint64_t, std::shared_ptr<timer_state>> gone;
  std::lock_guard g(lock_);
  for (auto& [id, t] : live_)
    t->cancelled.store(true, std::memory_order_release);
  gone.swap(live_);
  heap_.clear();
}

}  // namespace ionet::detail
