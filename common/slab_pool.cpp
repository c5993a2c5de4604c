#include "common/slab_pool.hpp"

namespace ionet::detail {
namespace {

constexpr std::uint64_t pack(std::uint32_t tag, std::uint32_t index) noexcept {
  return (std::uint64_t{tag} << 32) | index;
}
constexpr std::uint32_t index_of(std::uint64_t head) noexcept {
  return static_cast<std::uint32_t>(head);
}
constexpr std::uint32_t tag_of(std::uint64_t head) noexcept {
  return static_cast<std::uint32_t>(head >> 32);
}

}  // namespace

// The arrays are default-initialised: no page is written until its slice
// is first taken.
slab_pool::slab_pool(std::uint32_t slice_bytes, std::uint32_t count)
    : memory_(new std::byte[std::size_t{slice_bytes} * count]),
      length_(new std::uint32_t[count]),
      next_(new std::uint32_t[count]),
      slice_bytes_(slice_bytes),
      count_(count) {}

std::uint32_t slab_pool::take() noexcept {
  const std::uint32_t s = take_one();
  if (s == no_slice) exhausted_.fetch_add(1, std::memory_order_relaxed);
  return s;
}

std::uint32_t slab_pool::take_one() noexcept {
  std::uint64_t head = head_.load(std::memory_order_acquire);
  for (;;) {
    const std::uint32_t index = index_of(head);
    if (index == no_slice) {
      slice_chain one;
      return take_fresh(1, one) ? one.head : no_slice;
    }
    // next_ may change under us if another thread takes and re-links this
    // slice; the tag makes the CAS below fail in that case.
    const std::uint32_t next = next_ref(index).load(std::memory_order_relaxed);
    if (head_.compare_exchange_weak(head, pack(tag_of(head) + 1, next),
                                    std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      in_use_.fetch_add(1, std::memory_order_relaxed);
      length_[index] = 0;
      next_ref(index).store(no_slice, std::memory_order_relaxed);
      return index;
    }
  }
}

bool slab_pool::take_fresh(std::uint32_t n, slice_chain& out) noexcept {
  std::uint32_t first = fresh_.load(std::memory_order_relaxed);
  do {
    if (count_ - first < n) return false;
  } while (!fresh_.compare_exchange_weak(first, first + n,
                                         std::memory_order_relaxed));
  in_use_.fetch_add(n, std::memory_order_relaxed);
  slice_chain got;
  got.head = first;
  got.tail = first + n - 1;
  got.count = n;
  for (std::uint32_t s = first; s <= got.tail; ++s) {
    length_[s] = 0;
    next_ref(s).store(s == got.tail ? no_slice : s + 1,
                      std::memory_order_relaxed);
  }
  append(out, got);
  return true;
}

void slab_pool::push_run(std::uint32_t first, std::uint32_t last,
                         std::uint32_t n) noexcept {
  std::uint64_t head = head_.load(std::memory_order_relaxed);
  do {
    next_ref(last).store(index_of(head), std::memory_order_relaxed);
  } while (!head_.compare_exchange_weak(head, pack(tag_of(head) + 1, first),
                                        std::memory_order_acq_rel,
                                        std::memory_order_relaxed));
  in_use_.fetch_sub(n, std::memory_order_relaxed);
}

void slab_pool::give(std::uint32_t slice) noexcept {
  if (slice == no_slice) return;
  push_run(slice, slice, 1);
}

bool slab_pool::take_chain(std::uint32_t n, slice_chain& out) noexcept {
  if (n == 0) return true;
  // n slices off the free stack with one CAS: walk n links from the head,
  // then swing the head past them. A concurrent pop or push changes the
  // head's tag, so a walk over links that changed under us fails the CAS
  // and is retried, never used.
  std::uint64_t head = head_.load(std::memory_order_acquire);
  for (;;) {
    const std::uint32_t first = index_of(head);
    std::uint32_t last = first;
    std::uint32_t got = first == no_slice ? 0 : 1;
    while (got != 0 && got < n) {
      const std::uint32_t nx = next_ref(last).load(std::memory_order_relaxed);
      if (nx == no_slice || nx >= count_) break;
      last = nx;
      ++got;
    }
    if (got < n) {
      // Too few (or a torn walk): retry if the head moved meanwhile.
      const std::uint64_t now = head_.load(std::memory_order_acquire);
      if (now != head) {
        head = now;
        continue;
      }
      // The free stack is short: never-used slices, all n at once, or else
      // one by one from wherever they are (the pool is nearly full).
      if (take_fresh(n, out)) return true;
      slice_chain some;
      for (std::uint32_t i = 0; i < n; ++i) {
        const std::uint32_t s = take_one();
        if (s == no_slice) {
          give_chain(some);
          exhausted_.fetch_add(1, std::memory_order_relaxed);
          return false;
        }
        slice_chain one{s, s, 1, 0};
        append(some, one);
      }
      append(out, some);
      return true;
    }
    const std::uint32_t rest = next_ref(last).load(std::memory_order_relaxed);
    if (head_.compare_exchange_weak(head, pack(tag_of(head) + 1, rest),
                                    std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      in_use_.fetch_add(n, std::memory_order_relaxed);
      slice_chain got_chain;
      got_chain.head = first;
      got_chain.tail = last;
      got_chain.count = n;
      for (std::uint32_t s = first;;
           s = next_ref(s).load(std::memory_order_relaxed)) {
        length_[s] = 0;
        if (s == last) break;
      }
      next_ref(last).store(no_slice, std::memory_order_relaxed);
      append(out, got_chain);
      return true;
    }
  }
}

void slab_pool::give_chain(slice_chain& chain) noexcept {
  if (!chain.empty()) push_run(chain.head, chain.tail, chain.count);
  chain = slice_chain{};
}

void slab_pool::append(slice_chain& a, slice_chain& b) noexcept {
  if (b.empty()) return;
  if (a.empty()) {
    a = b;
  } else {
    set_next(a.tail, b.head);
    a.tail = b.tail;
    a.count += b.count;
    a.bytes += b.bytes;
  }
  b = slice_chain{};
}

slice_chain slab_pool::split_front(slice_chain& chain,
                                   std::uint32_t max_slices) noexcept {
  if (max_slices == 0) return {};
  if (chain.count <= max_slices) {
    slice_chain all = chain;
    chain = slice_chain{};
    return all;
  }
  slice_chain front;
  front.head = chain.head;
  std::uint32_t last = chain.head;
  front.bytes = length_[last];
  for (std::uint32_t i = 1; i < max_slices; ++i) {
    last = next(last);
    front.bytes += length_[last];
  }
  front.tail = last;
  front.count = max_slices;
  chain.head = next(last);
  chain.count -= max_slices;
  chain.bytes -= front.bytes;
  set_next(last, no_slice);
  return front;
}

}  // namespace ionet::detail
