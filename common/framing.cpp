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

std::error_code encode_to_slices(slab_pool& pool, framing mode,
                                 std::span<const std::byte> message,
                                 slice_chain& out) noexcept {
  const std::size_t unit = pool.slice_bytes();
  const std::size_t header = mode == framing::length_prefix ? header_bytes : 0;
  const std::size_t total = header + message.size();
  const std::size_t slices =
      std::max<std::size_t>(1, (total + unit - 1) / unit);
  if (total == 0) return {};  // an empty raw send writes nothing
  slice_chain chain;
  if (!pool.take_chain(static_cast<std::uint32_t>(slices), chain)) {
    return make_error_code(errc::pool_exhausted);
  }
  // Lay header + payload out as one stream across the slices: the first
  // slice starts with the header, every slice but the last is full.
  const std::byte* src = message.data();
  std::size_t left = message.size();
  std::uint32_t s = chain.head;
  std::size_t room = unit;
  std::byte* dst = pool.data(s);
  if (header) {
    put_header(dst, static_cast<std::uint32_t>(message.size()));
    dst += header;
    room -= header;
  }
  for (;;) {
    const std::size_t n = std::min(room, left);
    if (n) std::memcpy(dst, src, n);
    pool.length(s) = static_cast<std::uint32_t>(unit - room + n);
    src += n;
    left -= n;
    s = pool.next(s);
    if (s == no_slice) break;
    dst = pool.data(s);
    room = unit;
  }
  chain.bytes = total;
  pool.append(out, chain);
  return {};
}

}  // namespace ionet::detail
