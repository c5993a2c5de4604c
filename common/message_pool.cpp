#include "common/message_pool.hpp"

#include <bit>
#include <new>

namespace ionet::detail {
namespace {

int class_of(std::uint32_t size) noexcept {
  if (size <= 64) return 0;
  // bit_width is at most 32 here; libstdc++ 12 returns it unsigned (the
  // argument's type; int only since LWG 3656).
  return static_cast<int>(std::bit_width(size - 1)) - 6;
}

std::size_t capacity_of(int size_class) noexcept {
  return std::size_t{64} << size_class;
}

}  // namespace

message_pool::~message_pool() {
  for (auto& b : buckets_) {
    while (b.free) {
      msg_buffer* next = b.free->next;
      ::operator delete(b.free);
      b.free = next;
    }
  }
}

msg_buffer* message_pool::take(std::uint32_t size) noexcept {
  const int c = class_of(size);
  msg_buffer* b = nullptr;
  {
    std::lock_guard g(buckets_[c].lock);
    b = buckets_[c].free;
    if (b) buckets_[c].free = b->next;
  }
  if (b) {
    cached_bytes_.fetch_sub(capacity_of(c), std::memory_order_relaxed);
  } else {
    void* raw =
        ::operator new(sizeof(msg_buffer) + capacity_of(c), std::nothrow);
    if (!raw) return nullptr;
    b = new (raw) msg_buffer;
    b->size_class = static_cast<std::uint8_t>(c);
    allocations_.fetch_add(1, std::memory_order_relaxed);
  }
  b->size = size;
  b->refs.store(1, std::memory_order_relaxed);
  b->next = nullptr;
  outstanding_.fetch_add(1, std::memory_order_relaxed);
  return b;
}

void message_pool::give(msg_buffer* b) noexcept {
  if (!b) return;
  outstanding_.fetch_sub(1, std::memory_order_relaxed);
  const int c = b->size_class;
  const std::size_t cap = capacity_of(c);
  if (cached_bytes_.fetch_add(cap, std::memory_order_relaxed) + cap >
      cache_budget_) {
    cached_bytes_.fetch_sub(cap, std::memory_order_relaxed);
    ::operator delete(b);
    return;
  }
  std::lock_guard g(buckets_[c].lock);
  b->next = buckets_[c].free;
  buckets_[c].free = b;
}

}  // namespace ionet::detail
