// Connection slots made at start. An id is slot index + generation; the
// generation bumps every time a slot is recycled, so an id that named a
// closed connection never resolves again, even after its slot is reused.
// acquire() and recycle() may run on different threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "common/ids.hpp"
#include "ionet/events.hpp"

namespace ionet::detail {

class connection_table {
 public:
  connection_table() = default;
  explicit connection_table(std::uint32_t capacity);
  connection_table(const connection_table&) = delete;
  connection_table& operator=(const connection_table&) = delete;

  // A free slot's id, or nullopt when every slot is in use.
  std::optional<connection_id> acquire() noexcept {
    const auto slot = take();
    if (!slot) return std::nullopt;
    return publish(*slot);
  }
  // The two halves of acquire(), for an engine that readies the slot's
  // state in between: a free slot (the lowest), not yet resolvable; then
  // its new id, live from here on.
  std::optional<std::uint32_t> take() noexcept;
  connection_id publish(std::uint32_t slot) noexcept;
  // The slot of a live id, or nullopt when the id is stale or malformed.
  std::optional<std::uint32_t> resolve(connection_id id) const noexcept;
  // Bumps the slot's generation and frees it. The id it had is dead.
  void recycle(std::uint32_t slot) noexcept {
    retire(slot);
    free(slot);
  }
  // The two halves of recycle(), for engines that must kill an id at once
  // (a closed connection) but reuse its slot only later (when every
  // operation and event that refers to it is done).
  void retire(std::uint32_t slot) noexcept;
  void free(std::uint32_t slot) noexcept;

  // The id currently (or last) issued for a slot.
  connection_id id_of(std::uint32_t slot) const noexcept {
    return make_connection_id(slot, gen_[slot].load(std::memory_order_acquire));
  }
  std::uint32_t capacity() const noexcept { return capacity_; }
  std::uint32_t in_use() const noexcept {
    return in_use_.load(std::memory_order_relaxed);
  }

 private:
  std::unique_ptr<std::atomic<std::uint32_t>[]> gen_;  // odd while live
  std::unique_ptr<std::uint32_t[]> free_;              // stack of free slots
  std::uint32_t free_top_ = 0;
  std::mutex lock_;
  std::atomic<std::uint32_t> in_use_{0};
  std::uint32_t capacity_ = 0;
};

}  // namespace ionet::detail
