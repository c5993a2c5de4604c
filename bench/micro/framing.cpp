// frame_decoder::feed and encode_to_slices. The decoder is fed a recorded
// stream of length-prefixed messages the way a backend feeds it reads: in
// chunks of a fixed size. 64 KiB chunks (a large read) keep most messages
// whole inside one chunk, so they are handed out as views; 512 B chunks (a
// small read) make messages span chunks, so they are assembled in
// message_pool buffers, which the sink gives back as a user's release() does.
#include "common/framing.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/message_pool.hpp"
#include "common/slab_pool.hpp"

namespace {

using ionet::detail::decoded_message;
using ionet::detail::frame_decoder;
using ionet::detail::message_pool;
using ionet::detail::slab_pool;
using ionet::detail::slice_chain;

// About this many bytes of stream per iteration: enough for several 64 KiB
// chunks, small enough to stay in L2 so we measure the decoder, not DRAM.
constexpr std::size_t stream_target = 1u << 20;

std::vector<std::byte> make_stream(std::uint32_t size, std::size_t count) {
  std::vector<std::byte> s;
  s.reserve(count * (ionet::detail::header_bytes + size));
  std::byte header[ionet::detail::header_bytes];
  ionet::detail::put_header(header, size);
  for (std::size_t m = 0; m < count; ++m) {
    s.insert(s.end(), header, header + sizeof header);
    for (std::uint32_t i = 0; i < size; ++i) {
      s.push_back(static_cast<std::byte>(m + i));
    }
  }
  return s;
}

// Args: message size, chunk size.
void bm_decode(benchmark::State& state) {
  const auto size = static_cast<std::uint32_t>(state.range(0));
  const auto chunk = static_cast<std::size_t>(state.range(1));
  const std::size_t framed = ionet::detail::header_bytes + size;
  const std::size_t count = std::max<std::size_t>(1, stream_target / framed);
  const std::vector<std::byte> stream = make_stream(size, count);
  const std::span<const std::byte> all(stream);

  message_pool pool;
  frame_decoder decoder(ionet::framing::length_prefix, 1u << 20);
  std::size_t messages = 0;
  std::size_t assembled = 0;
  auto sink = [&](decoded_message&& m) {
    // Read the message as a user would look at it (its first byte), so the
    // view is not dead code; then give an assembled buffer back.
    benchmark::DoNotOptimize(m.bytes.front());
    ++messages;
    if (m.owned) {
      ++assembled;
      pool.give(m.owned);
    }
  };

  for (auto _ : state) {
    for (std::size_t at = 0; at < all.size(); at += chunk) {
      const auto piece = all.subspan(at, std::min(chunk, all.size() - at));
      if (decoder.feed(piece, pool, sink)) {
        state.SkipWithError("feed failed");
        return;
      }
    }
  }
  // A count of loops run: never negative.
  const auto iterations = static_cast<std::size_t>(state.iterations());
  if (messages != count * iterations || decoder.partial()) {
    state.SkipWithError("decoded the wrong number of messages");
    return;
  }
  // Bytes handed out as views are skipped over, not copied, so with large
  // chunks bytes/s can exceed memory bandwidth; items/s is the figure then.
  state.SetBytesProcessed(static_cast<std::int64_t>(iterations * all.size()));
  state.SetItemsProcessed(static_cast<std::int64_t>(messages));
  // The share of messages that took the copying (assembly) path.
  state.counters["assembled"] =
      static_cast<double>(assembled) / static_cast<double>(messages);
  state.counters["heap_allocs"] = static_cast<double>(pool.allocations());
}
BENCHMARK(bm_decode)
    ->ArgNames({"msg", "chunk"})
    ->ArgsProduct({{16, 512, 4096}, {64 << 10, 512}});

// Arg: message size. 512-byte slices, as the engine makes them.
void bm_encode(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const std::vector<std::byte> message(size, std::byte{0x5a});
  // 65536 + 4 bytes needs 129 slices; keep a margin so exhaustion is never
  // what we measure.
  slab_pool pool(512, 1024);
  for (auto _ : state) {
    slice_chain out;
    if (ionet::detail::encode_to_slices(pool, ionet::framing::length_prefix,
                                        message, out)) {
      state.SkipWithError("encode failed");
      return;
    }
    benchmark::DoNotOptimize(out.head);
    pool.give_chain(out);
  }
  // range(0) is the message size, in the counters' own type.
  state.SetBytesProcessed(state.iterations() * state.range(0));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_encode)->ArgName("msg")->Arg(16)->Arg(512)->Arg(4096)->Arg(65536);

}  // namespace
