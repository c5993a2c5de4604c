// Event delivery: hands the events engine threads gather to the user, and
// takes back the buffers they hold. Owns the inline handler
// (options::handler, moved here from the core's copy of the options), the
// pull model's event_queue, and the message_pool whose buffers message
// events hold past their read. What an event holds on its connection (a
// message not yet released, the user's hold on a closed slot) is the
// core's: an event that will not come back through release() (a closed
// event after the inline handler, one dropped once the engine stops, one
// nobody polled) is passed to the caller's `give_back`.
// Threads: make(), reset() and reset_counts() while no engine thread
// runs; deliver() on engine threads; poll() on the user's; stop() and
// restart() as the engine stops and starts; the rest on any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "common/event_access.hpp"
#include "common/event_queue.hpp"
#include "common/message_pool.hpp"
#include "ionet/engine.hpp"
#include "ionet/options.hpp"

namespace ionet::detail {

// The connection whose messages the inline handler is being given on this
// thread while more of its messages follow in the same batch (0: none).
// Replies sent meanwhile wait for the batch's one gathered write instead
// of each going out alone (engine_core::send): a pipelining client's
// burst is answered with one write, not one per message.
inline thread_local connection_id more_follow{};

// Events are gathered per engine-thread callback and handed over at once.
class event_batch {
 public:
  std::vector<event> events;
};

// The calling thread's batch, for backends whose completions may run on
// any of several threads: gathered while one connection is served, and
// delivered before that connection is let go. Reserved when a thread first
// asks (a backend asks when its thread starts), for as many events as a
// 64 KiB read of 64-byte messages makes, so it does not grow after start
// unless reads bring more, smaller messages.
inline constexpr std::size_t thread_batch_reserve = 1024;
inline event_batch& thread_batch() {
  thread_local event_batch batch = [] {
    event_batch b;
    b.events.reserve(thread_batch_reserve);
    return b;
  }();
  return batch;
}

class delivery {
 public:
  delivery(engine& self, event_handler handler) noexcept
      : self_(self), handler_(std::move(handler)) {}

  bool inline_mode() const noexcept { return static_cast<bool>(handler_); }
  message_pool& messages() noexcept { return messages_; }

  // Makes the pull queue, for `capacity` message events and connection
  // slots below `slots`; throws std::bad_alloc. Kept across restarts.
  void make(std::size_t capacity, std::uint32_t slots);
  // Lets go of the queue (make() failed further on).
  void reset() noexcept { queue_.reset(); }
  // The pool's allocations count from here (a start or restart).
  void reset_counts() noexcept {
    allocations_at_start_ = messages_.allocations();
  }

  // Hands a batch to the user: inline handler, or the pull queue. Never
  // waits for the user: a full queue holds the events back and
  // backed_up() says so.
  template <class GiveBack>
  void deliver(event_batch& batch, GiveBack&& give_back);
  // Pull model: up to out.size() events, waiting up to `timeout` for the
  // first. 0 at once in the inline model.
  std::size_t poll(std::span<event> out, std::chrono::milliseconds timeout);
  // Whether reading `slot` should wait for the user's poll(): the pull
  // queue is full or holds back events of it (event_queue).
  bool backed_up(std::uint32_t slot) const noexcept {
    return !inline_mode() && queue_->backed_up(slot);
  }
  // Pull model, any thread: queues one task event, or passes it to
  // give_back once the engine has stopped.
  template <class GiveBack>
  void push_task(const event& e, GiveBack&& give_back) {
    if (!queue_->push_task(e)) give_back(e);
  }
  // The engine stops: queued events stay for poll(), but for task events,
  // which go to give_back (never run once it stops); messages and tasks
  // pushed from here on are dropped too. restart() takes them again.
  template <class GiveBack>
  void stop(GiveBack&& give_back) {
    std::vector<event> tasks;
    queue_->close(tasks);
    for (const event& e : tasks) give_back(e);
  }
  void restart() { queue_->reopen(); }
  // Passes every event nobody polled to give_back.
  template <class GiveBack>
  void discard(GiveBack&& give_back) {
    if (queue_) queue_->drain([&give_back](event& e) { give_back(e); });
  }

  // For stats(): events waiting for poll(), and the pool's heap
  // allocations since reset_counts().
  std::size_t pending() const { return queue_ ? queue_->size() : 0; }
  std::uint64_t allocations_after_start() const noexcept {
    return messages_.allocations() - allocations_at_start_;
  }

 private:
  engine& self_;
  event_handler handler_;
  message_pool messages_;
  std::unique_ptr<event_queue> queue_;
  std::uint64_t allocations_at_start_ = 0;
};

template <class GiveBack>
void delivery::deliver(event_batch& batch, GiveBack&& give_back) {
  if (batch.events.empty()) return;
  if (inline_mode()) {
    const std::size_t n = batch.events.size();
    for (std::size_t i = 0; i < n; ++i) {
      const event& e = batch.events[i];
      more_follow = i + 1 < n && batch.events[i + 1].conn == e.conn &&
                            batch.events[i + 1].type == event_type::message
                        ? e.conn
                        : connection_id{};
      handler_(self_, e);
      // No message of the inline model is counted unreleased: its buffer
      // comes back here. A closed event's hold on the slot is the core's.
      if (e.type == event_type::message && event_access::owner(e)) {
        messages_.give(static_cast<msg_buffer*>(event_access::owner(e)));
      } else if (e.type == event_type::closed) {
        give_back(e);
      }
    }
    more_follow = connection_id{};
  } else {
    queue_->push(batch.events, [&give_back](event& e) {
      if (e.type == event_type::message) give_back(e);
    });
  }
  batch.events.clear();
}

}  // namespace ionet::detail
