// Per-slot objects for an engine sized for many connections, made only as
// slots come into use: the storage for every slot is reserved at start
// (one allocation, so memory never runs short later), but an object is
// constructed, and its pages touched, the first time its slot is handed
// out. connection_table hands out the lowest free slot, so the objects
// made are those of the most connections ever open at once, and an engine
// that holds few connections has few resident pages whatever its
// max_connections.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>

namespace ionet::detail {

template <class T>
class slot_array {
 public:
  slot_array() = default;
  slot_array(const slot_array&) = delete;
  slot_array& operator=(const slot_array&) = delete;
  ~slot_array() { reset(); }

  // Reserves room for `n` objects, made none (throws std::bad_alloc).
  void reserve(std::uint32_t n) {
    reset();
    items_ = static_cast<T*>(::operator new (sizeof(T) * std::size_t{n},
                                             std::align_val_t{alignof(T)}));
    size_ = n;
  }
  // Destroys what was made and gives the storage back.
  void reset() noexcept {
    if (!items_) return;
    const std::uint32_t made = made_.load(std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < made; ++i) items_[i].~T();
    ::operator delete (items_, std::align_val_t{alignof(T)});
    items_ = nullptr;
    size_ = 0;
    made_.store(0, std::memory_order_relaxed);
  }
  bool reserved() const noexcept { return items_ != nullptr; }
  std::uint32_t size() const noexcept { return size_; }

  // The object of a slot that has been handed out (made() saw it first).
  T& operator[](std::uint32_t i) noexcept { return items_[i]; }
  const T& operator[](std::uint32_t i) const noexcept { return items_[i]; }

  // Makes every object up to slot `i` that is not made yet, each default
  // constructed and then given to `init(T&, its slot)`, and returns slot
  // i's. Any thread; cheap once made.
  template <class Init>
  T& make(std::uint32_t i, Init&& init) {
    if (i >= made_.load(std::memory_order_acquire)) {
      std::lock_guard g(lock_);
      for (std::uint32_t k = made_.load(std::memory_order_relaxed); k <= i;
           ++k) {
        init(*new (&items_[k]) T(), k);
        made_.store(k + 1, std::memory_order_release);
      }
    }
    return items_[i];
  }
  T& make(std::uint32_t i) {
    return make(i, [](T&, std::uint32_t) {});
  }
  // How many are made: slots [0, made()) may be visited.
  std::uint32_t made() const noexcept {
    return made_.load(std::memory_order_acquire);
  }

 private:
  T* items_ = nullptr;
  std::uint32_t size_ = 0;
  std::atomic<std::uint32_t> made_{0};
  std::mutex lock_;
};

}  // namespace ionet::detail
