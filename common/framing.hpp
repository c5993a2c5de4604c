// Framing: a 4-byte big-endian length, then the payload. The decoder accepts
// input split anywhere (one byte at a time works) and rejects an oversized
// length before allocating anything; the encoder cuts a message into pool
// slices. No OS headers here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <system_error>

#include "common/message_pool.hpp"
#include "common/slab_pool.hpp"
#include "ionet/error.hpp"
#include "ionet/options.hpp"

namespace ionet::detail {

inline constexpr std::size_t header_bytes = 4;

inline void put_header(std::byte* out, std::uint32_t length) noexcept {
  out[0] = static_cast<std::byte>(length >> 24);
  out[1] = static_cast<std::byte>(length >> 16);
  out[2] = static_cast<std::byte>(length >> 8);
  out[3] = static_cast<std::byte>(length);
}

inline std::uint32_t get_header(const std::byte* in) noexcept {
  return (std::uint32_t(in[0]) << 24) | (std::uint32_t(in[1]) << 16) |
         (std::uint32_t(in[2]) << 8) | std::uint32_t(in[3]);
}

// One decoded message. `owned` is null when `bytes` points into the input
// given to feed() (valid only during the callback); otherwise the message
// was assembled across reads in a pool buffer that the callee now owns and
// must give back to the message_pool.
struct decoded_message {
  std::span<const std::byte> bytes;
  msg_buffer* owned = nullptr;
};

class frame_decoder {
 public:
  frame_decoder() = default;
  frame_decoder(framing mode, std::uint32_t max_message_bytes) noexcept
      : mode_(mode), max_(max_message_bytes) {}
  frame_decoder(const frame_decoder&) = delete;
  frame_decoder& operator=(const frame_decoder&) = delete;
  ~frame_decoder() { reset(); }

  // Decodes `in`, calling sink(decoded_message&&) for each whole message.
  // Returns errc::message_too_large (and stops) when a header announces more
  // than max_message_bytes; errc::out_of_memory when no buffer could be had.
  // After an error the decoder must be reset() before further use.
  template <class Sink>
  std::error_code feed(std::span<const std::byte> in, message_pool& pool,
                       Sink&& sink);

  void configure(framing mode, std::uint32_t max_message_bytes) noexcept {
    mode_ = mode;
    max_ = max_message_bytes;
  }

  // Drops a partly assembled message (connection closed or recycled).
  void reset() noexcept;

  // True while a message is partly received (a header or payload started).
  bool partial() const noexcept { return have_header_ > 0 || partial_; }

 private:
  msg_buffer* partial_ = nullptr;  // payload being assembled
  std::uint32_t filled_ = 0;       // bytes of partial_ filled so far
  std::uint32_t have_header_ = 0;  // header bytes gathered (0..3)
  std::byte header_[header_bytes]{};
  message_pool* pool_ = nullptr;  // owner of partial_
  framing mode_ = framing::length_prefix;
  std::uint32_t max_ = 0;
};

// Copies `n` bytes into a chain's slices from slice `at` with `room` bytes
// left in it, going on to the next slice whenever one is full (the chain
// must have the slices), and adds to each slice's length.
void copy_on(slab_pool& pool, std::uint32_t& at, std::size_t& room,
             const std::byte* src, std::size_t n) noexcept;

// The send side: a message (with its header in length_prefix mode) copied
// into slices of its own, appended to `out`. On failure nothing is taken
// from the pool.
std::error_code encode_to_slices(slab_pool& pool, framing mode,
                                 std::span<const std::byte> message,
                                 slice_chain& out) noexcept;

// A message appended to `queue` in place: into the room its last slice
// has left, then into as few new slices as the rest needs. Messages so
// share slices, and a queue holds about as many slices as its bytes fill.
// On failure (pool_exhausted) `queue` is as it was.
std::error_code append_in_place(slab_pool& pool, framing mode,
                                std::span<const std::byte> message,
                                slice_chain& queue) noexcept;

// --- implementation -------------------------------------------------------

template <class Sink>
std::error_code frame_decoder::feed(std::span<const std::byte> in,
                                    message_pool& pool, Sink&& sink) {
  if (mode_ == framing::raw) {
    if (!in.empty()) sink(decoded_message{in, nullptr});
    return {};
  }
  const std::byte* p = in.data();
  const std::byte* end = p + in.size();
  while (p != end) {
    if (partial_) {
      std::size_t want = partial_->size - filled_;
      std::size_t n = static_cast<std::size_t>(end - p);
      if (n > want) n = want;
      std::memcpy(partial_->data() + filled_, p, n);
      filled_ += static_cast<std::uint32_t>(n);
      p += n;
      if (filled_ == partial_->size) {
        msg_buffer* done = partial_;
        partial_ = nullptr;
        filled_ = 0;
        sink(decoded_message{{done->data(), done->size}, done});
      }
      continue;
    }
    std::uint32_t length;
    if (have_header_ == 0 &&
        end - p >= static_cast<std::ptrdiff_t>(header_bytes)) {
      length = get_header(p);
      p += header_bytes;
    } else {
      header_[have_header_++] = *p++;
      if (have_header_ < header_bytes) continue;
      have_header_ = 0;
      length = get_header(header_);
    }
    if (length > max_) return make_error_code(errc::message_too_large);
    if (static_cast<std::size_t>(end - p) >= length) {
      // Whole message in this input: hand out a view, copy nothing.
      sink(decoded_message{{p, length}, nullptr});
      p += length;
      continue;
    }
    partial_ = pool.take(length);
    if (!partial_) return make_error_code(errc::out_of_memory);
    pool_ = &pool;
    filled_ = 0;
  }
  return {};
}

}  // namespace ionet::detail
