// The pull model's hand-off: engine threads push batches of events, the
// user's thread pops batches. Message events are bounded by `capacity`: a
// pusher waits for room, so a slow consumer slows reading instead of
// growing memory (nothing is dropped). Connected and closed events are never
// refused: at most two per connection slot can be waiting, so they are
// bounded by max_connections anyway, and stop() must be able to hand every
// context back.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <span>
#include <vector>

#include "ionet/events.hpp"

namespace ionet::detail {

class event_queue {
 public:
  explicit event_queue(std::size_t capacity) : capacity_(capacity) {}

  // Appends `batch` in order. Once close()d, message events are not queued:
  // each is passed to drop(event&) so its buffer can be given back.
  template <class Drop>
  void push(std::span<const event> batch, Drop&& drop);

  // Up to out.size() events; waits up to `timeout` for the first one.
  std::size_t pop(std::span<event> out, std::chrono::milliseconds timeout);

  // Wakes every waiter; later message pushes are dropped. pop() still
  // returns what is queued, then 0 at once.
  void close();
  void reopen();
  std::size_t size() const;

  // Takes every queued event (used when the engine is destroyed).
  template <class Fn>
  void drain(Fn&& fn);

 private:
  void append_locked(const event& e);
  event take_locked();

  mutable std::mutex lock_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::vector<event> ring_;  // grows by doubling; never shrinks
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::size_t messages_ = 0;
  std::size_t capacity_;
  bool closed_ = false;
};

template <class Drop>
void event_queue::push(std::span<const event> batch, Drop&& drop) {
  if (batch.empty()) return;
  bool appended = false;
  std::unique_lock g(lock_);
  for (const event& e : batch) {
    if (e.type == event_type::message) {
      if (messages_ >= capacity_ && !closed_) {
        // Let the consumer see what is queued before every wait: it may
        // have drained the queue and gone back to sleep since the last.
        not_empty_.notify_all();
        not_full_.wait(g, [&] { return messages_ < capacity_ || closed_; });
      }
      if (closed_) {
        drop(const_cast<event&>(e));
        continue;
      }
      ++messages_;
    }
    append_locked(e);
    appended = true;
  }
  if (appended) not_empty_.notify_all();
}

template <class Fn>
void event_queue::drain(Fn&& fn) {
  std::lock_guard g(lock_);
  while (count_) {
    event e = take_locked();
    fn(e);
  }
  messages_ = 0;
}

}  // namespace ionet::detail
