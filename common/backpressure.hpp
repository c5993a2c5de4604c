// Backpressure: the engine-wide cap on queued send bytes, and the policy
// that pauses a connection's reading when the user's poll() or its peer's
// reading falls behind. Owns the bytes queued across connections and their
// cap; a connection's own queued bytes, the pull queue's state and the
// count of open connections are the core's, passed in.
// Threads: start() while no engine thread runs; the rest from any thread
// (the total is one relaxed atomic: the cap is kept to within what
// concurrent senders reserve at once).
#pragma once

#include <atomic>
#include <cstdint>

namespace ionet::detail {

class backpressure {
 public:
  // Empties the total (a restart too) and sets the limits: `cap` bytes
  // queued across connections, `per_connection` bytes on one.
  void start(std::uint64_t cap, std::uint32_t per_connection) noexcept;

  // send(): counts `bytes` as queued, or nothing and false when the cap
  // would be passed.
  bool reserve(std::uint64_t bytes) noexcept {
    if (total_.fetch_add(bytes, std::memory_order_relaxed) + bytes > cap_) {
      total_.fetch_sub(bytes, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  // Reserved bytes left the queues: written, dropped, or not queued after
  // all.
  void unreserve(std::uint64_t bytes) noexcept {
    total_.fetch_sub(bytes, std::memory_order_relaxed);
  }

  // Whether the queued bytes across connections are under 3/4 of the cap,
  // where pausing the readers that hold the most begins: room to tell a
  // sender that was refused to go on.
  bool has_room() const noexcept {
    return total_.load(std::memory_order_relaxed) < cap_ / 4 * 3;
  }

  // Whether to stop reading a connection with `mine` bytes queued: the
  // user's poll() is behind (`backed_up`: the pull queue is full or holds
  // back events of this connection), or its peer sends more than it reads:
  // its own queue is half full, or the engine's queued bytes are past 3/4
  // of the cap and it holds more than an even share of them. `open()`
  // counts the open connections, asked only then.
  template <class Open>
  bool should_pause(std::uint64_t mine, bool backed_up,
                    Open&& open) const noexcept {
    bool pause = backed_up;
    if (!pause) pause = mine > 0 && mine >= per_connection_ / 2;
    const std::uint64_t total = total_.load(std::memory_order_relaxed);
    if (!pause && mine > 0 && total >= cap_ / 4 * 3) {  // !has_room()
      pause = mine >= total / open();
    }
    return pause;
  }
  // Whether a paused connection may be read again: nothing of it is held
  // back and the pull queue has room (not `backed_up`), the engine's
  // queued bytes are under half the cap and its own, `mine()`, under a
  // quarter of its limit.
  template <class Mine>
  bool may_resume(bool backed_up, Mine&& mine) const noexcept {
    if (backed_up) return false;
    if (total_.load(std::memory_order_relaxed) >= cap_ / 2) return false;
    return mine() < per_connection_ / 4;
  }

 private:
  std::atomic<std::uint64_t> total_{0};  // across connections
  std::uint64_t cap_ = 0;
  std::uint32_t per_connection_ = 0;
};

}  // namespace ionet::detail
