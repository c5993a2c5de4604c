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
  const std::size_t slices = std::max<std::size_t>(1, (total + unit - 1) / unit);
  if (total == 0) return {};  // an empty raw send writes nothing
  slice_chain chain;
  if (!pool.take_chain(static_cast<std::uint32_t>(slices), chain)) {
    return make_error_code(errc::pool_exhausted);
  }
  // Lay header + payload out as one stream across the slices.
  std::byte hdr[header_bytes];
  if (header) put_header(hdr, static_cast<std::uint32_t>(message.size()));
  std::size_t pos = 0;  // position in the virtual stream header + payload
  for (std::uint32_t s = chain.head; s != no_slice; s = pool.next(s)) {
    std::byte* dst = pool.data(s);
    std::size_t room = std::min(unit, total - pos);
    std::size_t filled = 0;
    while (filled < room) {
      if (pos < header) {
        const std::size_t n = std::min(header - pos, room - filled);
        std::memcpy(dst + filled, hdr + pos, n);
        filled += n;
        pos += n;
      } else {
        const std::size_t n = room - filled;
        std::memcpy(dst + filled, message.data() + (pos - header), n);
        filled += n;
        pos += n;
      }
    }
    pool.length(s) = static_cast<std::uint32_t>(filled);
  }
  chain.bytes = total;
  pool.append(out, chain);
  return {};
}

}  // namespace ionet::detail
