// libFuzzer target: the frame decoder fed arbitrary bytes in arbitrary
// splits. Checked against a reference decode of the whole input at once:
// the same messages in the same order, an oversized header refused at the
// same place and before any allocation for it, nothing left assembled
// after reset(), and every buffer given back (ASan's leak check).
//
// Input: [mode/limit byte][split seed byte][stream...]
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/framing.hpp"
#include "common/message_pool.hpp"

using namespace ionet::detail;

namespace {

struct reference_result {
  std::vector<std::vector<std::byte>> messages;
  bool too_large = false;
};

reference_result reference(const std::byte* p, std::size_t n,
                           std::uint32_t max) {
  reference_result r;
  std::size_t i = 0;
  while (n - i >= header_bytes) {
    const std::uint32_t len = get_header(p + i);
    if (len > max) {
      r.too_large = true;
      return r;
    }
    if (n - i - header_bytes < len) break;
    r.messages.emplace_back(p + i + header_bytes, p + i + header_bytes + len);
    i += header_bytes + len;
  }
  return r;
}

[[noreturn]] void fail() { __builtin_trap(); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  if (size < 2) return 0;
  const bool raw = data[0] & 0x80;
  const std::uint32_t max = 1u + (data[0] & 0x7f) * 37u;  // 1 .. 4700
  std::uint32_t seed = data[1] | 1u;
  const auto* stream = reinterpret_cast<const std::byte*>(data + 2);
  const std::size_t n = size - 2;

  message_pool pool(1 << 20);
  frame_decoder dec(raw ? ionet::framing::raw : ionet::framing::length_prefix,
                    max);
  std::vector<std::vector<std::byte>> got;
  std::vector<std::byte> raw_bytes;
  bool too_large = false;
  std::size_t pos = 0;
  while (pos < n) {
    // Split lengths from a small LCG: 1 byte at a time through whole input.
    seed = seed * 1103515245u + 12345u;
    std::size_t chunk = 1 + (seed >> 16) % (seed & 0x100 ? 7 : 700);
    if (chunk > n - pos) chunk = n - pos;
    const std::error_code ec =
        dec.feed({stream + pos, chunk}, pool, [&](decoded_message&& m) {
          if (raw) {
            raw_bytes.insert(raw_bytes.end(), m.bytes.begin(), m.bytes.end());
          } else {
            if (m.bytes.size() > max) fail();
            got.emplace_back(m.bytes.begin(), m.bytes.end());
          }
          pool.give(m.owned);
        });
    pos += chunk;
    if (ec) {
      if (ec != ionet::errc::message_too_large || raw) fail();
      too_large = true;
      break;
    }
  }
  if (raw) {
    if (raw_bytes.size() != n ||
        (n && std::memcmp(raw_bytes.data(), stream, n) != 0))
      fail();
  } else {
    const reference_result ref = reference(stream, n, max);
    if (ref.too_large != too_large) fail();
    if (ref.messages != got) fail();
  }
  dec.reset();
  if (dec.partial()) fail();
  if (pool.outstanding() != 0) fail();
  return 0;
}
