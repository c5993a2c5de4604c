#include "common/connection_table.hpp"

namespace ionet::detail {

// A slot's generation is even while it is free and odd while it is live:
// acquire and retire each add one. So a live id always has an odd
// generation, an id is never 0, and resolve() needs only one load.

connection_table::connection_table(std::uint32_t capacity)
    : gen_(new std::atomic<std::uint32_t>[capacity]),
      free_(new std::uint32_t[capacity]),
      capacity_(capacity) {
  for (std::uint32_t i = 0; i < capacity; ++i) {
    gen_[i].store(0, std::memory_order_relaxed);
    // Lowest slot on top, so slots are used in order.
    free_[i] = capacity - 1 - i;
  }
  free_top_ = capacity;
}

std::optional<std::uint32_t> connection_table::take() noexcept {
  std::uint32_t slot;
  {
    std::lock_guard g(lock_);
    if (free_top_ == 0) return std::nullopt;
    slot = free_[--free_top_];
  }
  in_use_.fetch_add(1, std::memory_order_relaxed);
  return slot;
}

connection_id connection_table::publish(std::uint32_t slot) noexcept {
  const std::uint32_t gen =
      gen_[slot].fetch_add(1, std::memory_order_acq_rel) + 1;
  return make_connection_id(slot, gen);
}

std::optional<std::uint32_t> connection_table::resolve(
    connection_id id) const noexcept {
  const std::uint32_t slot = slot_of(id);
  const std::uint32_t gen = generation_of(id);
  if (slot >= capacity_ || (gen & 1u) == 0) return std::nullopt;
  if (gen_[slot].load(std::memory_order_acquire) != gen) return std::nullopt;
  return slot;
}

void connection_table::retire(std::uint32_t slot) noexcept {
  gen_[slot].fetch_add(1, std::memory_order_acq_rel);
}

void connection_table::free(std::uint32_t slot) noexcept {
  in_use_.fetch_sub(1, std::memory_order_relaxed);
  std::lock_guard g(lock_);
  free_[free_top_++] = slot;
}

}  // namespace ionet::detail
