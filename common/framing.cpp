#include "common/framing.hpp"

#include <algorithm>
#include <cstring>

namespace ionet::detail {

void frame_decoder::reset() noexcept {
  if (partial_) pool_->give(partial_);
  partial_ = nullptr;
  filled_ = 0;
  have_header_ = 0;
}

void copy_on(slab_pool& pool, std::uint32_t& at, std::size_t& room,
             const std::byte* src, std::size_t n) noexcept {
  const std::size_t unit = pool.slice_bytes();
  while (n) {
    if (room == 0) {
      at = pool.next(at);
      room = unit;
    }
    const std::size_t k = std::min(room, n);
    std::memcpy(pool.data(at) + (unit - room), src, k);
    pool.length(at) += static_cast<std::uint32_t>(k);
    room -= k;
    src += k;
    n -= k;
  }
}

std::error_code append_in_place(slab_pool& pool, framing mode,
                                std::span<const std::byte> message,
                                slice_chain& queue) noexcept {
  const std::size_t unit = pool.slice_bytes();
  const std::size_t hlen = mode == framing::length_prefix ? header_bytes : 0;
  const std::size_t total = hlen + message.size();
  if (total == 0) return {};
  const std::uint32_t old_tail = queue.tail;
  std::size_t room = queue.empty() ? 0 : unit - pool.length(old_tail);
  const auto size = static_cast<std::uint32_t>(message.size());
  if (total <= room) {
    // The usual case for small messages: all of it behind the last bytes.
    std::byte* at = pool.data(old_tail) + (unit - room);
    if (hlen) put_header(at, size);
    if (size) std::memcpy(at + hlen, message.data(), size);
    pool.length(old_tail) += static_cast<std::uint32_t>(total);
    queue.bytes += total;
    return {};
  }
  slice_chain fresh;
  const auto need =
      static_cast<std::uint32_t>((total - room + unit - 1) / unit);
  if (!pool.take_chain(need, fresh)) {
    return make_error_code(errc::pool_exhausted);
  }
  // Header and payload as one stream: the old tail's room first, then the
  // new slices, linked in behind it.
  std::uint32_t at = room ? old_tail : fresh.head;
  if (!room) room = unit;
  pool.append(queue, fresh);
  queue.bytes += total;
  if (hlen && room >= hlen) {  // the header fits whole
    put_header(pool.data(at) + (unit - room), size);
    pool.length(at) += static_cast<std::uint32_t>(hlen);
    room -= hlen;
  } else if (hlen) {  // it straddles two slices
    std::byte header[header_bytes];
    put_header(header, size);
    copy_on(pool, at, room, header, hlen);
  }
  copy_on(pool, at, room, message.data(), message.size());
  return {};
}

std::error_code encode_to_slices(slab_pool& pool, framing mode,
                                 std::span<const std::byte> message,
                                 slice_chain& out) noexcept {
  // Slices of its own, whatever room the last of `out` has left.
  slice_chain chain;
  if (auto ec = append_in_place(pool, mode, message, chain)) return ec;
  pool.append(out, chain);
  return {};
}

}  // namespace ionet::detail
