#include "common/event_queue.hpp"

namespace ionet::detail {

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

std::size_t event_queue::pop(std::span<event> out,
                             std::chrono::milliseconds timeout) {
  std::unique_lock g(lock_);
  if (count_ == 0 && !closed_ && timeout.count() > 0) {
    not_empty_.wait_for(g, timeout, [&] { return count_ > 0 || closed_; });
  }
  std::size_t n = 0;
  std::size_t freed = 0;
  while (n < out.size() && count_) {
    out[n] = take_locked();
    if (out[n].type == event_type::message) ++freed;
    ++n;
  }
  const bool was_full = messages_ >= capacity_;
  messages_ -= freed;
  g.unlock();
  if (was_full && freed) not_full_.notify_all();
  return n;
}

void event_queue::close() {
  {
    std::lock_guard g(lock_);
    closed_ = true;
  }
  not_empty_.notify_all();
  not_full_.notify_all();
}

void event_queue::reopen() {
  std::lock_guard g(lock_);
  closed_ = false;
}

std::size_t event_queue::size() const {
  std::lock_guard g(lock_);
  return count_;
}

}  // namespace ionet::detail
