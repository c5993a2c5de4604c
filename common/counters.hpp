// The counters behind engine::stats(), kept per engine thread: each engine
// thread adds to its own block, on its own cache line, with a plain load
// and store, so the I/O path writes no shared atomic per message. Threads
// that are not the engine's (send() from a user thread) share one block
// and add atomically. stats() sums the blocks; each sum is a little behind
// while the engine runs, never torn.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace ionet::detail {

enum class counter : std::uint8_t {
  rejected,
  bytes_received,
  messages_received,
  messages_sent,
  bytes_queued,
  bytes_sent,
  bytes_dropped,
  send_stale,
  send_queue_full,
  send_pool_exhausted,
  frames_too_large,
  read_pauses,
  connects,
  connect_failures,
  count_
};

class counters {
  static constexpr std::size_t kinds =
      static_cast<std::size_t>(counter::count_);

 public:
  struct alignas(64) block {
    std::array<std::atomic<std::uint64_t>, kinds> v{};
  };

  // Every block from zero, `blocks` of them for engine threads (a restart
  // too: the last run's threads are gone). Throws std::bad_alloc.
  void reset(std::size_t blocks) {
    if (blocks > blocks_) {
      own_.reset(new block[blocks]);
      blocks_ = blocks;
    }
    for (std::size_t b = 0; b < blocks_; ++b)
      for (auto& v : own_[b].v) v.store(0, std::memory_order_relaxed);
    for (auto& v : shared_.v) v.store(0, std::memory_order_relaxed);
    next_.store(0, std::memory_order_relaxed);
  }

  // The calling thread's own block, or null: look it up once, then add()
  // to it as often as needed.
  block* local() const noexcept { return current_ == this ? mine_ : nullptr; }
  void add(block* local, counter c, std::uint64_t n) noexcept {
    const auto i = static_cast<std::size_t>(c);
    if (local) {
      std::atomic<std::uint64_t>& v = local->v[i];
      v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    } else {
      shared_.v[i].fetch_add(n, std::memory_order_relaxed);
    }
  }
  void add(counter c, std::uint64_t n) noexcept { add(local(), c, n); }
  std::uint64_t sum(counter c) const noexcept {
    const auto i = static_cast<std::size_t>(c);
    std::uint64_t s = shared_.v[i].load(std::memory_order_relaxed);
    for (std::size_t b = 0; b < blocks_; ++b)
      s += own_[b].v[i].load(std::memory_order_relaxed);
    return s;
  }

  // Gives the calling thread a block of its own for the holder's lifetime
  // (an engine thread holds one from its start); when every block is
  // taken, the thread adds to the shared one.
  class thread_block {
   public:
    explicit thread_block(counters& c) noexcept
        : previous_(current_), previous_block_(mine_) {
      const std::size_t i = c.next_.fetch_add(1, std::memory_order_relaxed);
      if (i < c.blocks_) {
        current_ = &c;
        mine_ = &c.own_[i];
      }
    }
    ~thread_block() {
      current_ = previous_;
      mine_ = previous_block_;
    }
    thread_block(const thread_block&) = delete;
    thread_block& operator=(const thread_block&) = delete;

   private:
    const counters* previous_;
    block* previous_block_;
  };

 private:
  std::unique_ptr<block[]> own_;
  std::size_t blocks_ = 0;
  std::atomic<std::size_t> next_{0};
  block shared_;
  static inline thread_local const counters* current_ = nullptr;
  static inline thread_local block* mine_ = nullptr;
};

}  // namespace ionet::detail
