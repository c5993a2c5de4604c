// Fixed-size slices reserved once at start. take() and give() are O(1) and
// lock-free (a Treiber stack of slice indices with an ABA tag), so send()
// from many threads does not serialise on a lock. Exhaustion is reported,
// never undefined. Slices chain through a per-slice `next` index so a send
// queue is a list of slices with no other allocation.
//
// Nothing is touched at start: slices given back go on the free stack, and
// when it is empty the next never-used slice is taken (a high-water index),
// so the pool's resident memory, its per-slice links and lengths included,
// follows the most slices ever in use at once, not its capacity.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace ionet::detail {

inline constexpr std::uint32_t no_slice = 0xffffffffu;

// A singly linked run of slices: head..tail, `bytes` of data in all.
struct slice_chain {
  std::uint32_t head = no_slice;
  std::uint32_t tail = no_slice;
  std::uint32_t count = 0;
  std::uint64_t bytes = 0;
  bool empty() const noexcept { return head == no_slice; }
};

class slab_pool {
 public:
  slab_pool() = default;
  // Reserves slice_bytes * count bytes; throws std::bad_alloc on failure.
  // The memory is not touched here, so pages become resident only as
  // slices are first used.
  slab_pool(std::uint32_t slice_bytes, std::uint32_t count);
  slab_pool(const slab_pool&) = delete;
  slab_pool& operator=(const slab_pool&) = delete;

  // A free slice index, or no_slice when the pool is exhausted.
  std::uint32_t take() noexcept;
  void give(std::uint32_t slice) noexcept;
  // Takes `n` slices linked into `out` (length 0 each), all or nothing.
  bool take_chain(std::uint32_t n, slice_chain& out) noexcept;
  // Gives back every slice of a chain with one atomic operation.
  void give_chain(slice_chain& chain) noexcept;

  std::byte* data(std::uint32_t slice) noexcept {
    return memory_.get() + std::size_t{slice} * slice_bytes_;
  }
  std::uint32_t& length(std::uint32_t slice) noexcept { return length_[slice]; }
  std::uint32_t next(std::uint32_t slice) const noexcept {
    return next_ref(slice).load(std::memory_order_relaxed);
  }
  void set_next(std::uint32_t slice, std::uint32_t next) noexcept {
    next_ref(slice).store(next, std::memory_order_relaxed);
  }
  // Appends `b` to `a`; `b` is left empty.
  void append(slice_chain& a, slice_chain& b) noexcept;
  // Detaches the first `max_slices` slices of `chain` (all of it if it is
  // shorter) and returns them; `chain` keeps the rest. Walks the slices.
  slice_chain split_front(slice_chain& chain,
                          std::uint32_t max_slices) noexcept;

  std::uint32_t slice_bytes() const noexcept { return slice_bytes_; }
  std::uint32_t capacity() const noexcept { return count_; }
  std::uint32_t in_use() const noexcept {
    return in_use_.load(std::memory_order_relaxed);
  }
  std::uint64_t exhausted() const noexcept {
    return exhausted_.load(std::memory_order_relaxed);
  }

 private:
  void push_run(std::uint32_t first, std::uint32_t last,
                std::uint32_t n) noexcept;
  // A slice off the free stack, else a never-used one; no_slice (not
  // counted as exhaustion) when there is none.
  std::uint32_t take_one() noexcept;
  // `n` never-used slices, linked, into `out`; false when fewer are left.
  bool take_fresh(std::uint32_t n, slice_chain& out) noexcept;
  std::atomic_ref<std::uint32_t> next_ref(std::uint32_t slice) const noexcept {
    return std::atomic_ref<std::uint32_t>(next_[slice]);
  }

  std::unique_ptr<std::byte[]> memory_;
  // Left uninitialised (untouched) until a slice is first taken. The links
  // are read by take() while another thread may relink: atomic_ref.
  std::unique_ptr<std::uint32_t[]> length_;
  std::unique_ptr<std::uint32_t[]> next_;
  // Free-stack head: index in the low 32 bits, ABA tag in the high 32.
  std::atomic<std::uint64_t> head_{no_slice};
  std::atomic<std::uint32_t> fresh_{0};  // slices from here on never used
  std::atomic<std::uint32_t> in_use_{0};
  std::atomic<std::uint64_t> exhausted_{0};
  std::uint32_t slice_bytes_ = 0;
  std::uint32_t count_ = 0;
};

}  // namespace ionet::detail
