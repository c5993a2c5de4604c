// Buffers for received messages that must outlive the read that carried
// them (pull model, or a message assembled across reads). Size classes are
// powers of two; freed buffers are kept per class up to a byte budget, so a
// steady load allocates nothing after warm-up. Thread-safe: buffers are taken
// on engine threads and given back from the user's thread by release().
// A buffer may hold several messages (the pull model copies the whole
// messages of one read into one): each holds a reference, and drop() gives
// the buffer back with the last.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace ionet::detail {

struct msg_buffer {
  std::uint32_t size = 0;  // bytes of message(s)
  // Messages that hold the buffer (1 when taken); see drop().
  std::atomic<std::uint32_t> refs{1};
  msg_buffer* next = nullptr;   // free-list link
  std::uint8_t size_class = 0;  // capacity is 64 << size_class
  std::byte* data() noexcept { return reinterpret_cast<std::byte*>(this + 1); }
};

class message_pool {
 public:
  // `cache_bytes`: most bytes kept in free lists, across all classes.
  explicit message_pool(std::size_t cache_bytes = 64u << 20) noexcept
      : cache_budget_(cache_bytes) {}
  ~message_pool();
  message_pool(const message_pool&) = delete;
  message_pool& operator=(const message_pool&) = delete;

  // A buffer for `size` bytes, or nullptr when memory is exhausted.
  msg_buffer* take(std::uint32_t size) noexcept;
  // Gives `b` back whatever its references (its only holder is done).
  void give(msg_buffer* b) noexcept;
  // One holder of `b` is done: gives it back when it was the last.
  void drop(msg_buffer* b) noexcept {
    if (b && b->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) give(b);
  }

  // Heap allocations made so far (a free-list hit is not one).
  std::uint64_t allocations() const noexcept {
    return allocations_.load(std::memory_order_relaxed);
  }
  std::uint64_t outstanding() const noexcept {
    return outstanding_.load(std::memory_order_relaxed);
  }

 private:
  static constexpr int classes = 27;  // 64 B .. 4 GiB
  struct bucket {
    std::mutex lock;
    msg_buffer* free = nullptr;
  };
  bucket buckets_[classes];
  std::atomic<std::size_t> cached_bytes_{0};
  std::size_t cache_budget_;
  std::atomic<std::uint64_t> allocations_{0};
  std::atomic<std::uint64_t> outstanding_{0};
};

}  // namespace ionet::detail
