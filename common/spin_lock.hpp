// A lock for critical sections of a few dozen instructions that never
// block inside (the per-connection send state): uncontended it is one
// atomic exchange and one store, against a mutex's library calls. Under
// contention it spins briefly, then yields the CPU, so a preempted holder
// on a small machine is not waited for at full speed. Satisfies Lockable
// (std::lock_guard works).
#pragma once

#include <atomic>
#include <thread>

namespace ionet::detail {

class spin_lock {
 public:
  void lock() noexcept {
    for (;;) {
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      for (int spins = 0; locked_.load(std::memory_order_relaxed); ++spins) {
        if (spins >= 64) std::this_thread::yield();
      }
    }
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

}  // namespace ionet::detail
