#include "common/event_queue.hpp"

namespace ionet::detail {

event_queue::event_queue(std::size_t capacity, std::uint32_t slots)
    : capacity_(capacity),
      slots_(slots),
      holding_(new std::atomic<bool>[slots]),
      waiting_(new std::uint32_t[slots]) {
  held_.reserve(slots);
  for (std::uint32_t i = 0; i < slots; ++i)
    holding_[i].store(false, std::memory_order_relaxed);
}

void event_queue::append_locked(const event& e) {
  if (count_ == ring_.size()) {
    // Grow, keeping order: unroll the ring into a bigger vector.
    std::vector<event> bigger(ring_.empty() ? 1024 : ring_.size() * 2);
    for (std::size_t i = 0; i < count_; ++i) {
      bigger[i] = ring_[(head_ + i) % ring_.size()];
    }
    ring_.swap(bigger);
    head_ = 0;
  }
  ring_[(head_ + count_) % ring_.size()] = e;
  ++count_;
}

event event_queue::take_locked() {
  event e = ring_[head_];
  head_ = (head_ + 1) % ring_.size();
  --count_;
  return e;
}

void event_queue::hold_locked(std::uint32_t slot, const event& e) {
  if (!holding_[slot].load(std::memory_order_relaxed)) {
    holding_[slot].store(true, std::memory_order_relaxed);
    waiting_[(waiting_head_ + waiting_count_) % slots_] = slot;
    ++waiting_count_;
  }
  held_.make(slot).events.push_back(e);
  ++held_count_;
}

void event_queue::refill_locked(bool all) {
  while (waiting_count_) {
    const std::uint32_t slot = waiting_[waiting_head_];
    held_list& h = held_[slot];
    while (h.head < h.events.size()) {
      const event& e = h.events[h.head];
      const bool msg = e.type == event_type::message;
      if (msg && messages_ >= capacity_ && !all) break;
      if (msg) ++messages_;
      append_locked(e);
      ++h.head;
      --held_count_;
    }
    if (h.head < h.events.size()) break;  // full again: the rest waits
    h.events.clear();  // keeps its capacity for the next time
    h.head = 0;
    holding_[slot].store(false, std::memory_order_relaxed);
    waiting_head_ = (waiting_head_ + 1) % slots_;
    --waiting_count_;
  }
}

std::size_t event_queue::pop(std::span<event> out,
                             std::chrono::milliseconds timeout) {
  std::unique_lock g(lock_);
  if (count_ == 0 && !closed_ && timeout.count() > 0) {
    not_empty_.wait_for(g, timeout, [&] { return count_ > 0 || closed_; });
  }
  std::size_t n = 0;
  while (n < out.size() && count_) {
    out[n] = take_locked();
    if (out[n].type == event_type::message) {
      --messages_;
      if (waiting_count_)
        refill_locked(closed_);  // the room goes to held events first
    }
    ++n;
  }
  update_full_locked();
  return n;
}

bool event_queue::push_task(const event& e) {
  {
    std::lock_guard g(lock_);
    if (closed_) return false;
    const std::uint32_t slot = slot_of(e.conn);
    if (e.conn != connection_id{} &&
        holding_[slot].load(std::memory_order_relaxed)) {
      hold_locked(slot, e);
    } else {
      append_locked(e);
    }
  }
  not_empty_.notify_all();
  return true;
}

void event_queue::close(std::vector<event>& tasks) {
  {
    std::lock_guard g(lock_);
    closed_ = true;
    refill_locked(true);
    // Task events leave; the rest keep their order.
    std::size_t kept = 0;
    for (std::size_t i = 0; i < count_; ++i) {
      const event& e = ring_[(head_ + i) % ring_.size()];
      if (e.type == event_type::task) {
        tasks.push_back(e);
      } else {
        ring_[(head_ + kept++) % ring_.size()] = e;
      }
    }
    count_ = kept;
    update_full_locked();
  }
  not_empty_.notify_all();
}

void event_queue::reopen() {
  std::lock_guard g(lock_);
  closed_ = false;
  update_full_locked();
}

std::size_t event_queue::size() const {
  std::lock_guard g(lock_);
  return count_ + held_count_;
}

}  // namespace ionet::detail
