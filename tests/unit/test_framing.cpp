// Unit tests of common/framing: the length-prefix decoder (input split
// anywhere, oversized lengths refused before allocating, empty messages,
// raw pass-through) and the encoder that cuts a message into pool slices.
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <system_error>
#include <vector>

#include "catch.hpp"
#include "common/framing.hpp"
#include "common/message_pool.hpp"
#include "common/slab_pool.hpp"
#include "ionet/error.hpp"
#include "ionet/options.hpp"

namespace {

using bytes = std::vector<std::byte>;
using ionet::detail::decoded_message;
using ionet::detail::frame_decoder;
using ionet::detail::message_pool;
using ionet::detail::no_slice;
using ionet::detail::slab_pool;
using ionet::detail::slice_chain;

// A message whose bytes depend on its index and position, so a mix-up of
// messages or offsets shows.
bytes make_message(std::size_t size, std::uint32_t seed) {
  bytes m(size);
  for (std::size_t i = 0; i < size; ++i) {
    m[i] = static_cast<std::byte>((seed * 131u + i * 7u + (i >> 8)) & 0xffu);
  }
  return m;
}

// Frames messages by hand (independently of put_header): 4-byte big-endian
// length, then the payload.
bytes frame_all(const std::vector<bytes>& messages) {
  bytes out;
  for (const bytes& m : messages) {
    const auto n = static_cast<std::uint32_t>(m.size());
    out.push_back(static_cast<std::byte>((n >> 24) & 0xffu));
    out.push_back(static_cast<std::byte>((n >> 16) & 0xffu));
    out.push_back(static_cast<std::byte>((n >> 8) & 0xffu));
    out.push_back(static_cast<std::byte>(n & 0xffu));
    out.insert(out.end(), m.begin(), m.end());
  }
  return out;
}

// Collects decoded messages as copies; gives pool-owned buffers back at once
// (the callee owns them) and counts how many there were.
struct collector {
  message_pool* pool;
  std::vector<bytes> got;
  std::size_t owned = 0;

  void operator()(decoded_message&& m) {
    got.emplace_back(m.bytes.begin(), m.bytes.end());
    if (m.owned) {
      ++owned;
      CHECK(m.owned->size == m.bytes.size());
      CHECK(m.owned->data() == m.bytes.data());
      pool->give(m.owned);
    }
  }
};

std::error_code feed(frame_decoder& d, message_pool& pool, collector& c,
                     const bytes& stream, std::size_t from, std::size_t to) {
  return d.feed(std::span<const std::byte>(stream.data() + from, to - from),
                pool, c);
}

// The bytes of a slice chain, walking exactly chain.count slices.
bytes chain_bytes(slab_pool& pool, const slice_chain& chain) {
  bytes out;
  std::uint32_t s = chain.head;
  std::uint32_t last = no_slice;
  for (std::uint32_t i = 0; i < chain.count; ++i) {
    REQUIRE(s != no_slice);
    const std::byte* p = pool.data(s);
    out.insert(out.end(), p, p + pool.length(s));
    last = s;
    s = pool.next(s);
  }
  CHECK(last == chain.tail);
  CHECK(s == no_slice);
  return out;
}

}  // namespace

TEST_CASE("framing: put_header and get_header are big-endian",
          "[unit][framing]") {
  std::byte h[4];
  ionet::detail::put_header(h, 0x01020304u);
  CHECK(h[0] == std::byte{0x01});
  CHECK(h[1] == std::byte{0x02});
  CHECK(h[2] == std::byte{0x03});
  CHECK(h[3] == std::byte{0x04});
  for (std::uint32_t v :
       {0u, 1u, 255u, 256u, 0x00ff00ffu, 0x80000000u, 0xffffffffu}) {
    ionet::detail::put_header(h, v);
    CHECK(ionet::detail::get_header(h) == v);
  }
  const std::byte raw[4] = {std::byte{0xde}, std::byte{0xad}, std::byte{0xbe},
                            std::byte{0xef}};
  CHECK(ionet::detail::get_header(raw) == 0xdeadbeefu);
  CHECK(ionet::detail::header_bytes == 4);
}

TEST_CASE("framing: decoder yields every message of one whole input",
          "[unit][framing]") {
  message_pool pool;
  frame_decoder d(ionet::framing::length_prefix, 1024);
  const std::vector<bytes> messages = {make_message(3, 1), make_message(0, 2),
                                       make_message(100, 3), make_message(0, 4),
                                       make_message(1, 5)};
  const bytes stream = frame_all(messages);
  collector c{&pool, {}};
  REQUIRE_FALSE(feed(d, pool, c, stream, 0, stream.size()));
  CHECK(c.got == messages);
  // Whole messages inside the input are handed out as views: nothing copied.
  CHECK(c.owned == 0);
  CHECK(pool.allocations() == 0);
  CHECK_FALSE(d.partial());
}

TEST_CASE("framing: decoder handles every split point", "[unit][framing]") {
  message_pool pool;
  frame_decoder d(ionet::framing::length_prefix, 1024);
  // Empty messages at the start, in the middle and at the end.
  const std::vector<bytes> messages = {make_message(0, 1), make_message(5, 2),
                                       make_message(1, 3), make_message(0, 4),
                                       make_message(0, 5), make_message(17, 6),
                                       make_message(3, 7), make_message(0, 8)};
  const bytes stream = frame_all(messages);
  const std::size_t n = stream.size();

  SECTION("one split: two reads") {
    for (std::size_t k = 0; k <= n; ++k) {
      INFO("split at " << k << " of " << n);
      collector c{&pool, {}};
      REQUIRE_FALSE(feed(d, pool, c, stream, 0, k));
      REQUIRE_FALSE(feed(d, pool, c, stream, k, n));
      CHECK(c.got == messages);
      CHECK_FALSE(d.partial());
      CHECK(pool.outstanding() == 0);
    }
  }
  SECTION("two splits: three reads") {
    for (std::size_t i = 0; i <= n; ++i) {
      for (std::size_t j = i; j <= n; ++j) {
        collector c{&pool, {}};
        REQUIRE_FALSE(feed(d, pool, c, stream, 0, i));
        REQUIRE_FALSE(feed(d, pool, c, stream, i, j));
        REQUIRE_FALSE(feed(d, pool, c, stream, j, n));
        if (c.got != messages) {
          FAIL("splits at " << i << " and " << j << " of " << n);
        }
        REQUIRE_FALSE(d.partial());
      }
    }
    CHECK(pool.outstanding() == 0);
  }
}

TEST_CASE("framing: decoder fed one byte at a time", "[unit][framing]") {
  message_pool pool;
  frame_decoder d(ionet::framing::length_prefix, 1 << 16);
  const std::vector<bytes> messages = {
      make_message(0, 1), make_message(1, 2),   make_message(4, 3),
      make_message(0, 4), make_message(600, 5), make_message(2, 6)};
  const bytes stream = frame_all(messages);
  collector c{&pool, {}};
  std::size_t boundary = 0;  // where the next message's header starts
  std::size_t next = 0;      // index of that message
  for (std::size_t i = 0; i < stream.size(); ++i) {
    REQUIRE_FALSE(feed(d, pool, c, stream, i, i + 1));
    if (i + 1 == boundary + 4 + messages[next].size()) {
      // The last byte of a message: it is out, nothing is pending.
      REQUIRE(c.got.size() == next + 1);
      REQUIRE_FALSE(d.partial());
      boundary = i + 1;
      ++next;
    } else {
      REQUIRE(c.got.size() == next);
      REQUIRE(d.partial());
    }
  }
  CHECK(c.got == messages);
  // Every non-empty message had to be assembled in a pool buffer.
  CHECK(c.owned == 4);
  CHECK(pool.outstanding() == 0);
}

TEST_CASE("framing: decoder with random splits and random sizes",
          "[unit][framing]") {
  std::mt19937 rng(20240611u);  // fixed seed: failures reproduce
  message_pool pool;
  constexpr std::uint32_t max_bytes = 20000;
  frame_decoder d(ionet::framing::length_prefix, max_bytes);
  std::size_t total_messages = 0;
  for (int round = 0; round < 200; ++round) {
    std::vector<bytes> messages;
    const std::size_t count = 1 + rng() % 12;
    for (std::size_t i = 0; i < count; ++i) {
      std::size_t size = 0;
      switch (rng() % 4) {
        case 0:
          size = 0;
          break;
        case 1:
          size = rng() % 8;
          break;
        case 2:
          size = rng() % 600;
          break;
        default:
          size = rng() % (max_bytes + 1);
          break;
      }
      messages.push_back(make_message(size, static_cast<std::uint32_t>(rng())));
    }
    const bytes stream = frame_all(messages);
    collector c{&pool, {}};
    std::size_t pos = 0;
    while (pos < stream.size()) {
      // Mostly small reads, sometimes large ones, sometimes empty ones.
      std::size_t len = 0;
      switch (rng() % 4) {
        case 0:
          len = rng() % 4;
          break;
        case 1:
          len = 1 + rng() % 32;
          break;
        case 2:
          len = 1 + rng() % 2048;
          break;
        default:
          len = 1 + rng() % 30000;
          break;
      }
      if (len > stream.size() - pos) len = stream.size() - pos;
      REQUIRE_FALSE(feed(d, pool, c, stream, pos, pos + len));
      pos += len;
    }
    INFO("round " << round);
    REQUIRE(c.got.size() == messages.size());
    REQUIRE(c.got == messages);
    REQUIRE_FALSE(d.partial());
    total_messages += messages.size();
  }
  CHECK(pool.outstanding() == 0);
  CHECK(total_messages > 1000);
}

TEST_CASE("framing: an oversized length is refused before any allocation",
          "[unit][framing]") {
  message_pool pool;
  constexpr std::uint32_t max_bytes = 100;
  frame_decoder d(ionet::framing::length_prefix, max_bytes);
  collector c{&pool, {}};

  SECTION("header in one piece") {
    const bytes stream = frame_all({make_message(max_bytes + 1, 1)});
    // Only the header and a little payload: a decoder that allocated first
    // would take a buffer here.
    CHECK(feed(d, pool, c, stream, 0, 6) == ionet::errc::message_too_large);
  }
  SECTION("header one byte at a time") {
    const bytes stream = frame_all({make_message(max_bytes + 1, 1)});
    for (std::size_t i = 0; i < 3; ++i)
      REQUIRE_FALSE(feed(d, pool, c, stream, i, i + 1));
    CHECK(feed(d, pool, c, stream, 3, 4) == ionet::errc::message_too_large);
  }
  SECTION("header split 2 + 2") {
    const bytes stream = frame_all({make_message(max_bytes + 1, 1)});
    REQUIRE_FALSE(feed(d, pool, c, stream, 0, 2));
    CHECK(feed(d, pool, c, stream, 2, 4) == ionet::errc::message_too_large);
  }
  SECTION("the largest length there is") {
    const bytes stream = {std::byte{0xff}, std::byte{0xff}, std::byte{0xff},
                          std::byte{0xff}, std::byte{1}};
    CHECK(feed(d, pool, c, stream, 0, stream.size()) ==
          ionet::errc::message_too_large);
  }
  SECTION("after good messages in the same read") {
    const bytes good = frame_all({make_message(7, 1), make_message(0, 2)});
    bytes stream = good;
    const bytes bad = frame_all({make_message(max_bytes + 1, 3)});
    stream.insert(stream.end(), bad.begin(), bad.begin() + 4);
    CHECK(feed(d, pool, c, stream, 0, stream.size()) ==
          ionet::errc::message_too_large);
    CHECK(c.got.size() == 2);  // the messages before it were delivered
  }
  CHECK(pool.allocations() == 0);
  CHECK(pool.outstanding() == 0);
  CHECK(c.owned == 0);
}

TEST_CASE("framing: a length of exactly max_message_bytes is accepted",
          "[unit][framing]") {
  message_pool pool;
  constexpr std::uint32_t max_bytes = 100;
  frame_decoder d(ionet::framing::length_prefix, max_bytes);
  const std::vector<bytes> messages = {make_message(max_bytes, 9)};
  const bytes stream = frame_all(messages);
  collector c{&pool, {}};
  // Split so the payload must be assembled: exactly one allocation.
  REQUIRE_FALSE(feed(d, pool, c, stream, 0, 10));
  CHECK(pool.allocations() == 1);
  REQUIRE_FALSE(feed(d, pool, c, stream, 10, stream.size()));
  CHECK(c.got == messages);
  CHECK(pool.outstanding() == 0);
}

TEST_CASE("framing: the decoder works again after an error and reset",
          "[unit][framing]") {
  message_pool pool;
  frame_decoder d(ionet::framing::length_prefix, 50);
  collector c{&pool, {}};
  const bytes bad = frame_all({make_message(51, 1)});
  REQUIRE(feed(d, pool, c, bad, 0, bad.size()) ==
          ionet::errc::message_too_large);
  d.reset();
  CHECK_FALSE(d.partial());
  const std::vector<bytes> messages = {make_message(50, 2), make_message(0, 3)};
  const bytes good = frame_all(messages);
  REQUIRE_FALSE(feed(d, pool, c, good, 0, 3));
  REQUIRE_FALSE(feed(d, pool, c, good, 3, good.size()));
  CHECK(c.got == messages);
}

TEST_CASE("framing: empty messages are allowed", "[unit][framing]") {
  message_pool pool;
  collector c{&pool, {}};
  const std::vector<bytes> messages(5);  // five empty messages
  const bytes stream = frame_all(messages);
  REQUIRE(stream.size() == 20);

  SECTION("with max_message_bytes 0") {
    frame_decoder d(ionet::framing::length_prefix, 0);
    REQUIRE_FALSE(feed(d, pool, c, stream, 0, stream.size()));
    CHECK(c.got == messages);
    // And a one-byte message is already too large.
    const bytes one = frame_all({make_message(1, 1)});
    CHECK(feed(d, pool, c, one, 0, one.size()) ==
          ionet::errc::message_too_large);
  }
  SECTION("one byte at a time") {
    frame_decoder d(ionet::framing::length_prefix, 10);
    for (std::size_t i = 0; i < stream.size(); ++i) {
      REQUIRE_FALSE(feed(d, pool, c, stream, i, i + 1));
      CHECK(c.got.size() == (i + 1) / 4);
    }
    CHECK(c.got == messages);
  }
  CHECK(pool.allocations() == 0);
  CHECK(c.owned == 0);
}

TEST_CASE("framing: raw mode passes bytes through unframed",
          "[unit][framing]") {
  message_pool pool;
  frame_decoder d(ionet::framing::raw, 4);
  std::vector<decoded_message> got;
  auto sink = [&](decoded_message&& m) { got.push_back(m); };
  // Bytes that would be a huge header in length_prefix mode, and more of
  // them than max_message_bytes: raw mode does not look at them.
  const bytes a = {std::byte{0xff}, std::byte{0xff}, std::byte{0xff},
                   std::byte{0xff}, std::byte{0x00}, std::byte{0x01},
                   std::byte{0x02}};
  const bytes b = {std::byte{0x00}, std::byte{0x00}};
  REQUIRE_FALSE(d.feed(a, pool, sink));
  REQUIRE_FALSE(
      d.feed(std::span<const std::byte>(), pool, sink));  // nothing to deliver
  REQUIRE_FALSE(d.feed(b, pool, sink));
  REQUIRE(got.size() == 2);
  // Each read is one message, a view of the input itself.
  CHECK(got[0].bytes.data() == a.data());
  CHECK(got[0].bytes.size() == a.size());
  CHECK(got[0].owned == nullptr);
  CHECK(got[1].bytes.data() == b.data());
  CHECK(got[1].bytes.size() == b.size());
  CHECK(got[1].owned == nullptr);
  CHECK_FALSE(d.partial());
  CHECK(pool.allocations() == 0);
}

TEST_CASE("framing: configure switches the mode and the limit",
          "[unit][framing]") {
  message_pool pool;
  frame_decoder d;
  collector c{&pool, {}};
  d.configure(ionet::framing::length_prefix, 8);
  const std::vector<bytes> messages = {make_message(8, 1)};
  const bytes stream = frame_all(messages);
  REQUIRE_FALSE(feed(d, pool, c, stream, 0, stream.size()));
  CHECK(c.got == messages);
  const bytes nine = frame_all({make_message(9, 2)});
  CHECK(feed(d, pool, c, nine, 0, nine.size()) ==
        ionet::errc::message_too_large);
  d.reset();
  d.configure(ionet::framing::raw, 8);
  REQUIRE_FALSE(feed(d, pool, c, nine, 0, nine.size()));
  REQUIRE(c.got.size() == 2);
  CHECK(c.got[1] == nine);
}

TEST_CASE("framing: partial() tracks a started header or payload",
          "[unit][framing]") {
  message_pool pool;
  frame_decoder d(ionet::framing::length_prefix, 100);
  collector c{&pool, {}};
  const bytes stream = frame_all({make_message(10, 1)});
  CHECK_FALSE(d.partial());
  REQUIRE_FALSE(feed(d, pool, c, stream, 0, 1));
  CHECK(d.partial());  // one header byte
  REQUIRE_FALSE(feed(d, pool, c, stream, 1, 4));
  CHECK(d.partial());  // whole header, no payload yet
  REQUIRE_FALSE(feed(d, pool, c, stream, 4, 13));
  CHECK(d.partial());  // payload but for one byte
  CHECK(c.got.empty());
  REQUIRE_FALSE(feed(d, pool, c, stream, 13, 14));
  CHECK_FALSE(d.partial());
  CHECK(c.got.size() == 1);
}

TEST_CASE("framing: reset and destruction give a partial message's buffer back",
          "[unit][framing]") {
  message_pool pool;
  collector c{&pool, {}};
  const bytes stream = frame_all({make_message(300, 1)});
  {
    frame_decoder d(ionet::framing::length_prefix, 1000);
    REQUIRE_FALSE(feed(d, pool, c, stream, 0, 100));
    REQUIRE(d.partial());
    CHECK(pool.outstanding() == 1);
    d.reset();
    CHECK_FALSE(d.partial());
    CHECK(pool.outstanding() == 0);
    // The stream starts over cleanly after a reset.
    REQUIRE_FALSE(feed(d, pool, c, stream, 0, 100));
    CHECK(pool.outstanding() == 1);
  }  // destroyed with a partial message
  CHECK(pool.outstanding() == 0);
  CHECK(c.got.empty());
}

// --- encoder ----------------------------------------------------------------

TEST_CASE("framing: encode_to_slices round-trips around slice boundaries",
          "[unit][framing]") {
  const std::uint32_t slice = GENERATE(16u, 64u, 512u);
  slab_pool slices(slice, 4096);
  message_pool pool;
  const std::size_t s = slice;
  const std::vector<std::size_t> sizes = {
      0,         1,     2,         3,          s - 5,     s - 4,
      s - 3,     s - 1, s,         s + 1,      2 * s - 5, 2 * s - 4,
      2 * s - 3, 2 * s, 2 * s + 1, 10 * s + 7, 40000};
  for (std::size_t size : sizes) {
    INFO("slice " << slice << ", message " << size);
    const bytes message = make_message(size, static_cast<std::uint32_t>(size));
    slice_chain chain;
    REQUIRE_FALSE(ionet::detail::encode_to_slices(
        slices, ionet::framing::length_prefix, message, chain));
    const std::size_t total = size + 4;
    CHECK(chain.bytes == total);
    // As few slices as the bytes need; none longer than a slice.
    CHECK(chain.count == (total + s - 1) / s);
    CHECK(slices.in_use() == chain.count);
    std::uint32_t id = chain.head;
    for (std::uint32_t i = 0; i < chain.count; ++i, id = slices.next(id)) {
      CHECK(slices.length(id) <= slice);
      CHECK(slices.length(id) > 0);
    }
    const bytes stream = chain_bytes(slices, chain);
    REQUIRE(stream.size() == total);
    // The header is the big-endian length.
    CHECK(ionet::detail::get_header(stream.data()) == size);
    CHECK(stream == frame_all({message}));

    // Decoded whole, and slice by slice as a sender would write them.
    frame_decoder d(ionet::framing::length_prefix, 1u << 20);
    collector c{&pool, {}};
    REQUIRE_FALSE(feed(d, pool, c, stream, 0, stream.size()));
    std::size_t pos = 0;
    id = chain.head;
    for (std::uint32_t i = 0; i < chain.count; ++i, id = slices.next(id)) {
      REQUIRE_FALSE(feed(d, pool, c, stream, pos, pos + slices.length(id)));
      pos += slices.length(id);
    }
    REQUIRE(c.got.size() == 2);
    CHECK(c.got[0] == message);
    CHECK(c.got[1] == message);

    slices.give_chain(chain);
    CHECK(chain.empty());
    CHECK(slices.in_use() == 0);
  }
  CHECK(pool.outstanding() == 0);
}

TEST_CASE("framing: append_in_place packs messages into shared slices",
          "[unit][framing]") {
  const std::uint32_t slice = GENERATE(16u, 64u, 512u);
  const std::size_t s = slice;
  slab_pool slices(slice, 4096);
  slice_chain queue;
  std::vector<bytes> sent;
  std::size_t total = 0;
  // Every framed size from 4 (empty) to a whole slice, twice over, so
  // messages land at every offset and straddle every boundary; then some
  // that need several new slices.
  std::vector<std::size_t> sizes;
  for (int round = 0; round < 2; ++round) {
    for (std::size_t size = 0; size + 4 <= s; ++size) sizes.push_back(size);
  }
  for (std::size_t size : {s - 3, s, 2 * s + 1, 3 * s - 4, 5 * s + 7}) {
    sizes.push_back(size);
  }
  for (std::size_t size : sizes) {
    INFO("slice " << slice << ", message " << size);
    sent.push_back(make_message(size, static_cast<std::uint32_t>(size)));
    REQUIRE_FALSE(ionet::detail::append_in_place(
        slices, ionet::framing::length_prefix, sent.back(), queue));
    total += size + 4;
    // As few slices as the bytes fill: nothing is left empty between.
    CHECK(queue.bytes == total);
    CHECK(queue.count == (total + s - 1) / s);
    CHECK(slices.in_use() == queue.count);
  }
  CHECK(chain_bytes(slices, queue) == frame_all(sent));
  slices.give_chain(queue);
  CHECK(slices.in_use() == 0);

  // Raw bytes are appended as they are; an empty send adds nothing.
  const bytes a = make_message(s - 1, 7);
  const bytes b = make_message(2, 8);
  REQUIRE_FALSE(
      ionet::detail::append_in_place(slices, ionet::framing::raw, a, queue));
  REQUIRE_FALSE(
      ionet::detail::append_in_place(slices, ionet::framing::raw, {}, queue));
  REQUIRE_FALSE(
      ionet::detail::append_in_place(slices, ionet::framing::raw, b, queue));
  bytes both = a;
  both.insert(both.end(), b.begin(), b.end());
  CHECK(queue.count == 2);
  CHECK(chain_bytes(slices, queue) == both);
  slices.give_chain(queue);
}

TEST_CASE(
    "framing: append_in_place leaves the queue as it was when the pool is "
    "short",
    "[unit][framing]") {
  slab_pool slices(16, 3);
  slice_chain queue;
  const bytes m = make_message(8, 1);  // 12 bytes framed
  REQUIRE_FALSE(ionet::detail::append_in_place(
      slices, ionet::framing::length_prefix, m, queue));
  REQUIRE_FALSE(ionet::detail::append_in_place(
      slices, ionet::framing::length_prefix, m, queue));  // takes slice 2
  CHECK(queue.count == 2);
  const slice_chain before = queue;
  const bytes stream = chain_bytes(slices, queue);
  // 24 of 32 bytes used, one slice free. 28 bytes would need two new
  // slices: all or nothing.
  CHECK(ionet::detail::append_in_place(slices, ionet::framing::length_prefix,
                                       make_message(24, 3),
                                       queue) == ionet::errc::pool_exhausted);
  CHECK(queue.head == before.head);
  CHECK(queue.tail == before.tail);
  CHECK(queue.count == before.count);
  CHECK(queue.bytes == before.bytes);
  CHECK(slices.in_use() == 2);
  CHECK(chain_bytes(slices, queue) == stream);
  // What fits in the room left goes in without a slice.
  const bytes small = make_message(4, 2);  // 8 bytes framed
  REQUIRE_FALSE(ionet::detail::append_in_place(
      slices, ionet::framing::length_prefix, small, queue));
  CHECK(queue.count == 2);
  CHECK(slices.in_use() == 2);
  CHECK(chain_bytes(slices, queue) == frame_all({m, m, small}));
  slices.give_chain(queue);
}

TEST_CASE("framing: the encoded header is big-endian", "[unit][framing]") {
  slab_pool slices(16, 8192);
  for (std::size_t size : {std::size_t{0x0102}, std::size_t{0x010203}}) {
    const bytes message = make_message(size, 1);
    slice_chain chain;
    REQUIRE_FALSE(ionet::detail::encode_to_slices(
        slices, ionet::framing::length_prefix, message, chain));
    const std::byte* first = slices.data(chain.head);
    CHECK(first[0] == std::byte{0x00});
    CHECK(first[1] == static_cast<std::byte>((size >> 16) & 0xff));
    CHECK(first[2] == static_cast<std::byte>((size >> 8) & 0xff));
    CHECK(first[3] == static_cast<std::byte>(size & 0xff));
    CHECK(first[4] == message[0]);
    slices.give_chain(chain);
  }
  CHECK(slices.in_use() == 0);
}

TEST_CASE("framing: raw encoding copies the bytes without a header",
          "[unit][framing]") {
  slab_pool slices(16, 16);
  slice_chain chain;
  SECTION("empty: nothing is taken") {
    REQUIRE_FALSE(ionet::detail::encode_to_slices(
        slices, ionet::framing::raw, std::span<const std::byte>(), chain));
    CHECK(chain.empty());
    CHECK(chain.bytes == 0);
    CHECK(slices.in_use() == 0);
  }
  SECTION("several slices") {
    for (std::size_t size : {std::size_t{1}, std::size_t{16}, std::size_t{17},
                             std::size_t{37}, std::size_t{256}}) {
      INFO("size " << size);
      const bytes message = make_message(size, 3);
      REQUIRE_FALSE(ionet::detail::encode_to_slices(slices, ionet::framing::raw,
                                                    message, chain));
      CHECK(chain.bytes == size);
      CHECK(chain.count == (size + 15) / 16);
      CHECK(chain_bytes(slices, chain) == message);
      slices.give_chain(chain);
      CHECK(slices.in_use() == 0);
    }
  }
}

TEST_CASE("framing: encode_to_slices appends to a non-empty chain",
          "[unit][framing]") {
  slab_pool slices(16, 64);
  message_pool pool;
  const std::vector<bytes> messages = {make_message(20, 1), make_message(0, 2),
                                       make_message(45, 3)};
  slice_chain queue;
  std::uint32_t expected_count = 0;
  for (const bytes& m : messages) {
    REQUIRE_FALSE(ionet::detail::encode_to_slices(
        slices, ionet::framing::length_prefix, m, queue));
    expected_count += static_cast<std::uint32_t>((m.size() + 4 + 15) / 16);
  }
  CHECK(queue.count == expected_count);
  CHECK(queue.bytes == 20 + 4 + 0 + 4 + 45 + 4);
  const bytes stream = chain_bytes(slices, queue);
  CHECK(stream == frame_all(messages));
  frame_decoder d(ionet::framing::length_prefix, 100);
  collector c{&pool, {}};
  REQUIRE_FALSE(feed(d, pool, c, stream, 0, stream.size()));
  CHECK(c.got == messages);
  slices.give_chain(queue);
  CHECK(slices.in_use() == 0);
}

TEST_CASE("framing: pool exhaustion returns pool_exhausted and takes nothing",
          "[unit][framing]") {
  slab_pool slices(16, 4);

  SECTION("message larger than the whole pool") {
    slice_chain out;
    const bytes message = make_message(100, 1);  // needs 7 slices
    CHECK(ionet::detail::encode_to_slices(slices, ionet::framing::length_prefix,
                                          message,
                                          out) == ionet::errc::pool_exhausted);
    CHECK(out.empty());
    CHECK(out.count == 0);
    CHECK(out.bytes == 0);
    CHECK(slices.in_use() == 0);
    CHECK(slices.exhausted() > 0);
  }
  SECTION("pool partly in use, existing chain untouched") {
    slice_chain out;
    REQUIRE_FALSE(
        ionet::detail::encode_to_slices(slices, ionet::framing::length_prefix,
                                        make_message(20, 1), out));  // 2 slices
    REQUIRE(slices.in_use() == 2);
    const slice_chain before = out;
    const bytes before_bytes = chain_bytes(slices, out);
    // 3 slices needed, 2 free.
    CHECK(ionet::detail::encode_to_slices(slices, ionet::framing::length_prefix,
                                          make_message(40, 2),
                                          out) == ionet::errc::pool_exhausted);
    CHECK(slices.in_use() == 2);
    CHECK(out.head == before.head);
    CHECK(out.tail == before.tail);
    CHECK(out.count == before.count);
    CHECK(out.bytes == before.bytes);
    CHECK(chain_bytes(slices, out) == before_bytes);
    // What fits still goes: exactly the 2 free slices.
    REQUIRE_FALSE(ionet::detail::encode_to_slices(
        slices, ionet::framing::length_prefix, make_message(28, 3), out));
    CHECK(slices.in_use() == 4);
    CHECK(out.count == 4);
    slices.give_chain(out);
    CHECK(slices.in_use() == 0);
  }
}
