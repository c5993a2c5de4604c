// The timeouts: a coarse clock that stamps activity, and the check of a
// connection's stamps against idle_timeout, read_timeout and write_timeout.
// Owns the clock (milliseconds since start(), never 0) and the three
// limits; the stamps live in each conn_state, set by the core as bytes
// move, and are compared here.
// Threads: start() while no engine thread runs; tick() from a backend's
// periodic timer, on any of its threads; now(), expired() and on() from
// any thread (the clock is one relaxed atomic).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <system_error>

#include "common/conn_state.hpp"
#include "ionet/options.hpp"

namespace ionet::detail {

class timeouts {
 public:
  explicit timeouts(const options& opts) noexcept
      : idle_(opts.idle_timeout),
        read_(opts.read_timeout),
        write_(opts.write_timeout) {}

  // Sets the clock going from 1 (a restart too).
  void start() noexcept;
  // Advances the clock (a few times a second), so the I/O path reads one
  // atomic instead of the system clock.
  void tick() noexcept;
  // The clock, for stamps.
  std::uint32_t now() const noexcept {
    return now_.load(std::memory_order_relaxed);
  }
  // The timeout `st` has run into, if any (the backend then closes the
  // connection with this reason). A connection still connecting has only
  // its connect deadline.
  std::error_code expired(const conn_state& st) const noexcept;
  // Whether any timeout is on (backends skip the sweep otherwise).
  bool on() const noexcept {
    return idle_.count() || read_.count() || write_.count() ||
           deadlines_.load(std::memory_order_relaxed) != 0;
  }
  // A connect deadline `ms` from now (0: none), for conn_state::connect_by;
  // while any is set, on() is true. done_deadline() when it is cleared.
  std::uint32_t deadline_in(std::chrono::milliseconds ms) noexcept;
  void done_deadline() noexcept {
    deadlines_.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  std::chrono::milliseconds idle_;
  std::chrono::milliseconds read_;
  std::chrono::milliseconds write_;
  std::atomic<std::uint32_t> now_{1};        // coarse ms since start, never 0
  std::atomic<std::uint32_t> deadlines_{0};  // connect deadlines set
  std::int64_t epoch_ms_ = 0;
};

}  // namespace ionet::detail
