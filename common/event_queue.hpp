// The pull model's hand-off: engine threads push batches of events, the
// user's thread pops batches. Pushing never waits: an engine thread must not
// stop serving other connections because one user thread is slow.
//
// Message events in the queue are bounded by `capacity`. A message that
// finds the queue full is held back, with every later event of its
// connection, in that connection's own list, in order; pop() moves held
// events in as it makes room, connections in the order they began holding.
// A connection with events held back stops reading (backed_up(), asked by
// engine_core::should_pause_reading) until they are in: so a slow consumer
// slows reading, nothing is dropped, and what is held is at most what the
// reads in flight had decoded. Connected and closed events are never
// refused: a connection's own held events come before its closed event, and
// a new connection, which has nothing held, is queued at once.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "common/ids.hpp"
#include "common/slot_array.hpp"
#include "ionet/events.hpp"

namespace ionet::detail {

class event_queue {
 public:
  // `slots`: connection slots (slot_of(event::conn) is below it).
  event_queue(std::size_t capacity, std::uint32_t slots);

  // Appends `batch` in order, or holds events back (above); never waits.
  // Once close()d, message events are not queued: each is passed to
  // drop(event&) so its buffer can be given back.
  template <class Drop>
  void push(std::span<const event> batch, Drop&& drop);

  // One task event, never refused while open: behind the connection's
  // held events when it names one, else at the end. False once close()d
  // (the caller drops it). Any thread.
  bool push_task(const event& e);

  // Whether a connection should stop reading: it has events held back, or
  // the queue is full (its next message would be held). Any thread.
  bool backed_up(std::uint32_t slot) const noexcept {
    return full_.load(std::memory_order_relaxed) ||
           holding_[slot].load(std::memory_order_relaxed);
  }

  // Up to out.size() events; waits up to `timeout` for the first one.
  std::size_t pop(std::span<event> out, std::chrono::milliseconds timeout);

  // Wakes every waiter and queues everything held back (stop() hands every
  // context back through poll()); later message pushes are dropped. pop()
  // still returns what is queued, then 0 at once. Task events are taken
  // out into `tasks` (the caller drops them, outside the queue's lock).
  void close(std::vector<event>& tasks);
  void close() {  // a queue that holds no task events (unit tests)
    std::vector<event> tasks;
    close(tasks);
  }
  void reopen();
  // Events waiting for poll(), held back ones included.
  std::size_t size() const;

  // Takes every queued and held event (used when the engine is destroyed).
  template <class Fn>
  void drain(Fn&& fn);

 private:
  // A connection's held-back events; `head` is the next to move in.
  struct held_list {
    std::vector<event> events;
    std::size_t head = 0;
  };

  void append_locked(const event& e);
  event take_locked();
  void hold_locked(std::uint32_t slot, const event& e);
  // Moves held events in while messages fit (all of them when `all`).
  void refill_locked(bool all);
  void update_full_locked() {
    full_.store(messages_ >= capacity_, std::memory_order_relaxed);
  }

  mutable std::mutex lock_;
  std::condition_variable not_empty_;
  std::vector<event> ring_;  // grows by doubling; never shrinks
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::size_t messages_ = 0;
  std::size_t capacity_;
  bool closed_ = false;

  std::uint32_t slots_;
  // Made for a slot the first time one of its events is held back: most
  // engines hold none, and those that do, for few slots.
  slot_array<held_list> held_;
  std::unique_ptr<std::atomic<bool>[]> holding_;  // held_[slot] not empty
  // Slots with events held back, oldest first: a ring of `slots_`, since a
  // slot is in it at most once.
  std::unique_ptr<std::uint32_t[]> waiting_;
  std::uint32_t waiting_head_ = 0;
  std::uint32_t waiting_count_ = 0;
  std::size_t held_count_ = 0;
  std::atomic<bool> full_{false};
};

template <class Drop>
void event_queue::push(std::span<const event> batch, Drop&& drop) {
  if (batch.empty()) return;
  bool appended = false;
  {
    std::lock_guard g(lock_);
    for (const event& e : batch) {
      const bool msg = e.type == event_type::message;
      if (closed_ && msg) {
        drop(const_cast<event&>(e));
        continue;
      }
      const std::uint32_t slot = slot_of(e.conn);
      if (!closed_ && (holding_[slot].load(std::memory_order_relaxed) ||
                       (msg && messages_ >= capacity_))) {
        hold_locked(slot, e);
        continue;
      }
      if (msg) ++messages_;
      append_locked(e);
      appended = true;
    }
    update_full_locked();
  }
  if (appended) not_empty_.notify_all();
}

template <class Fn>
void event_queue::drain(Fn&& fn) {
  std::lock_guard g(lock_);
  refill_locked(true);
  while (count_) {
    event e = take_locked();
    fn(e);
  }
  messages_ = 0;
  update_full_locked();
}

}  // namespace ionet::detail
