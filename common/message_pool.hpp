// Buffers for received messages that must outlive the read that carried
// them (pull model, or a message assembled across reads). Size classes are
// powers of two; freed buffers are kept per class up to a byte budget, so a
// steady load allocates nothing after warm-up. Thread-safe: buffers are taken
// on engine threads and given back from the user's thread by release().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace ionet::detail {

struct msg_buffer {
  std::uint32_t size = 0;       // bytes of message
  std::uint8_t size_class = 0;  // capacity is 64 << size_class
  msg_buffer* next = nullptr;   // free-list link
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
  void give(msg_buffer* b) noexcept;

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
