// Raw framing: bytes pass through unframed. Each read is one message event
// (never empty); send() writes bytes as they are. An echo of a stream cut
// at random points reassembles on the client to the same stream.
#include <random>

#include "support.hpp"

using namespace ionet_test;

namespace {

ionet::options raw_options() {
  ionet::options o = local_options();
  o.mode = ionet::framing::raw;
  o.max_message_bytes = 64 * 1024;
  o.max_queued_bytes = 1u << 20;
  return o;
}

// Writes `stream` in random pieces and reads the echo as it comes, from one
// thread (a framed_client is used by one thread at a time). Returns a
// description of the first problem, or "".
std::string raw_echo(ionet::framed_client& c, std::span<const std::byte> stream,
                     std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> back;
  back.reserve(stream.size());
  std::vector<std::byte> buf(64 * 1024);
  std::size_t written = 0;
  auto read_some = [&]() -> std::string {
    std::size_t got = 0;
    if (auto ec = c.read_some(buf, got, wait_budget)) {
      return "read_some after " + std::to_string(back.size()) +
             " bytes: " + ec.message();
    }
    back.insert(back.end(), buf.begin(),
                buf.begin() + static_cast<std::ptrdiff_t>(got));
    if (back.size() > written) return "more bytes came back than were sent";
    return {};
  };
  static constexpr std::size_t caps[] = {1, 5, 100, 1500, 20000, 100000};
  while (written < stream.size()) {
    const std::size_t n = std::min<std::size_t>(
        stream.size() - written, 1 + rng() % caps[rng() % std::size(caps)]);
    if (auto ec = c.write_raw(stream.subspan(written, n)))
      return "write_raw: " + ec.message();
    written += n;
    // Keep the unread echo small so neither side stalls.
    while (written - back.size() > 128 * 1024) {
      if (auto p = read_some(); !p.empty()) return p;
    }
  }
  while (back.size() < stream.size()) {
    if (auto p = read_some(); !p.empty()) return p;
  }
  const long long d = first_difference(back, stream);
  if (d >= 0) return "echoed stream differs at byte " + std::to_string(d);
  return {};
}

}  // namespace

TEST_CASE(
    "raw mode: a stream echoes as it arrives and reassembles on the client",
    "[conformance][raw]") {
  server s(raw_options());
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, s.port()).ok());

  const std::size_t total = sanitized ? 512 * 1024 : 2u << 20;
  const auto stream = pattern(total, 2024);
  const std::string problem = raw_echo(c, stream, 11);
  INFO(problem);
  CHECK(problem.empty());

  // The server saw exactly the stream's bytes, in reads of at least a byte
  // and at most what the client wrote in total.
  REQUIRE(
      s.wait_until([&](const record& r) { return r.message_bytes >= total; }));
  const record r = s.snapshot();
  CHECK(r.message_bytes == total);
  CHECK(r.empty_messages == 0);
  CHECK(r.messages >= 1);
  CHECK(r.echo_failures == 0);
  // Nothing extra.
  std::vector<std::byte> extra(16);
  std::size_t got = 0;
  CHECK(is_timeout(c.read_some(extra, got, 100ms)));
}

TEST_CASE("raw mode: length-prefix-looking bytes are not interpreted",
          "[conformance][raw]") {
  // A header announcing 4 GiB would close a length_prefix connection; in raw
  // mode it is just four bytes.
  server s(raw_options());
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  std::vector<std::byte> bytes(4);
  put_u32be(bytes.data(), 0xffffffffu);
  const auto tail = pattern(1000, 5);
  bytes.insert(bytes.end(), tail.begin(), tail.end());
  const std::string problem = raw_echo(c, bytes, 12);
  INFO(problem);
  CHECK(problem.empty());
  CHECK(s.snapshot().closed.empty());
}

TEST_CASE("raw mode: server-initiated sends arrive byte for byte, in order",
          "[conformance][raw]") {
  server s(raw_options(), [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);

  // send() writes bytes as they are: no header. Pieces of assorted sizes,
  // including larger than max_message_bytes (that limit is for frames).
  std::vector<std::byte> expect;
  std::mt19937 rng(3);
  for (int i = 0; i < 30; ++i) {
    const std::size_t n = i == 7 ? 100 * 1024 : 1 + rng() % 5000;
    const auto piece = pattern(n, 70 + static_cast<std::uint64_t>(i));
    std::error_code ec;
    const auto deadline = steady::now() + wait_budget;
    while ((ec = s.engine().send(*id, piece)) == ionet::errc::queue_full &&
           steady::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    REQUIRE_FALSE(ec);
    expect.insert(expect.end(), piece.begin(), piece.end());
  }
  std::vector<std::byte> got(expect.size());
  REQUIRE_FALSE(c.read_exact(got, wait_budget));
  CHECK(first_difference(got, expect) == -1);
  std::vector<std::byte> extra(16);
  std::size_t n = 0;
  CHECK(is_timeout(c.read_some(extra, n, 100ms)));
}

TEST_CASE("raw mode: a send larger than a whole queue is message_too_large",
          "[conformance][raw]") {
  // It could never be queued: queue_full would have the caller wait for a
  // writable event that cannot come.
  const ionet::options o = raw_options();
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  CHECK(s.engine().send(*id, pattern(o.max_queued_bytes + 1, 1)) ==
        ionet::errc::message_too_large);
  const auto whole = pattern(o.max_queued_bytes, 2);  // exactly fits
  CHECK_FALSE(s.engine().send(*id, whole));
  std::vector<std::byte> got(whole.size());
  REQUIRE_FALSE(c.read_exact(got, wait_budget));
  CHECK(same_bytes(got, whole));
  CHECK(s.snapshot().writable.empty());
}
