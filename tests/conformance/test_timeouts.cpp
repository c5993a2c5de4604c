// Timeouts: an idle connection is closed (idle_timeout), a message left
// partial is cut off (read_timeout: slowloris), a peer that does not read
// what it is sent is reset (write_timeout); a busy connection is not
// touched by any of them. Checked a few times a second, so the waits here
// are a few times the timeout.
#include "support.hpp"

using namespace ionet_test;

namespace {

ionet::options short_timeouts() {
  ionet::options o = local_options();
  o.idle_timeout = std::chrono::milliseconds(slow_platform ? 1500 : 600);
  o.read_timeout = o.idle_timeout;
  o.write_timeout = o.idle_timeout;
  return o;
}

// Only the read timeout.
ionet::options read_timeout_only() {
  ionet::options o = short_timeouts();
  o.idle_timeout = std::chrono::milliseconds(0);
  return o;
}

}  // namespace

TEST_CASE("timeouts: an idle connection is closed with idle_timeout",
          "[conformance][timeouts]") {
  server s(short_timeouts());
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  REQUIRE_FALSE(echo_roundtrip(c, pattern(10, 1)));
  const auto t0 = steady::now();
  REQUIRE(s.wait_closed_id(*id));
  CHECK(steady::now() - t0 >= s.opts().idle_timeout - 100ms);
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::idle_timeout);
  // Closed politely: the client reads EOF.
  CHECK(read_until_closed(c) == ionet::errc::peer_closed);
}

TEST_CASE(
    "timeouts: a message left partial is cut off with read_timeout (slowloris)",
    "[conformance][timeouts]") {
  const ionet::options o = read_timeout_only();
  server s(o);
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  // A header and a few bytes of a 1,000-byte message, one byte at a time
  // slower than the timeout allows in total: each byte resets nothing.
  const auto f = frame(pattern(1000, 2));
  const auto t0 = steady::now();
  bool closed = false;
  std::error_code write_end;
  for (std::size_t i = 0; i < 40 && !closed; ++i) {
    write_end = c.write_raw(std::span(f).subspan(i, 1));
    if (write_end) break;
    closed = s.wait_closed_id(*id, o.read_timeout / 4);
  }
  REQUIRE(s.wait_closed_id(*id));
  CHECK(steady::now() - t0 < o.read_timeout * 4);
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::read_timeout);
  CHECK(s.engine().stats().messages_received == 0);
  // Cut off means reset (options.hpp), not a graceful end. A byte written
  // just after the server's close meets the reset itself, and Linux then
  // reads a clean end: the reset is the write's to report.
  INFO("the client's last write: " << write_end.message());
  CHECK(is_reset(write_end ? write_end : read_until_closed(c)));
}

TEST_CASE(
    "timeouts: a client that writes after being cut off is told "
    "connection_reset by the write",
    "[conformance][timeouts]") {
  const ionet::options o = read_timeout_only();
  server s(o);
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  const auto f = frame(pattern(100, 3));
  REQUIRE_FALSE(c.write_raw(std::span(f).first(5)));
  REQUIRE(s.wait_closed_id(*id));
  REQUIRE(s.snapshot().closed_of(*id)->reason == ionet::errc::read_timeout);
  // Once the reset has come, the next write fails with it (where the close
  // reaches the client as a clean end, as under Wine, a write or two go
  // out first and the server's host answers them with the reset). The
  // write names it as read_some does: connection_reset, not the OS's code.
  std::error_code end;
  for (int i = 0; i < 50 && !end; ++i) {
    end = c.write_raw(std::span(f).subspan(5, 1));
    if (!end) std::this_thread::sleep_for(20ms);
  }
  INFO("the write's error: " << end.message());
  CHECK(end == ionet::errc::connection_reset);
}

TEST_CASE("timeouts: a peer that does not read is reset with write_timeout",
          "[conformance][timeouts]") {
  ionet::options o = short_timeouts();
  o.idle_timeout = std::chrono::milliseconds(0);
  o.max_message_bytes = 64 * 1024;
  o.max_queued_bytes = 8u << 20;
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  // Far more than the socket buffers hold; the client never reads.
  int queued = 0;
  for (int i = 0; i < 100; ++i) {
    if (!s.engine().send(*id, pattern(60000, static_cast<std::uint64_t>(i))))
      ++queued;
  }
  CHECK(queued > 10);
  REQUIRE(s.wait_closed_id(*id));
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::write_timeout);
  CHECK(is_reset(read_until_closed(c)));  // reset, not ended gracefully
  // The write that was stuck is cancelled; its bytes count as dropped when
  // its completion arrives, which may be just after the closed event.
  CHECK(eventually([&] {
    const auto st = s.engine().stats();
    return st.bytes_queued == st.bytes_sent + st.bytes_dropped;
  }));
  CHECK(s.engine().stats().bytes_dropped > 0);
  CHECK(eventually([&] { return s.engine().stats().pool_slices_in_use == 0; }));
}

TEST_CASE("timeouts: a connection that keeps talking is never timed out",
          "[conformance][timeouts]") {
  server s(short_timeouts());
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, s.port()).ok());
  // Three timeouts' worth of traffic, a message every tenth of one.
  const auto until = steady::now() + s.opts().idle_timeout * 3;
  int n = 0;
  while (steady::now() < until) {
    REQUIRE_FALSE(
        echo_roundtrip(c, pattern(100, static_cast<std::uint64_t>(n++))));
    std::this_thread::sleep_for(s.opts().idle_timeout / 10);
  }
  CHECK(s.snapshot().closed.empty());
}

TEST_CASE(
    "timeouts: a stream never read on a message boundary is not cut off by read_timeout",
    "[conformance][timeouts]") {
  const ionet::options o = read_timeout_only();
  server s(o);
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, s.port()).ok());
  // 1,000-byte messages written in 700-byte pieces, a piece every tenth of
  // the timeout for three timeouts: nearly every read ends inside a
  // message, yet one completes at least every other piece.
  std::vector<std::byte> stream;
  const int messages = 40;
  for (int i = 0; i < messages; ++i) {
    const auto f = frame(pattern(1000, static_cast<std::uint64_t>(i)));
    stream.insert(stream.end(), f.begin(), f.end());
  }
  constexpr std::size_t piece = 700;
  const auto until = steady::now() + o.read_timeout * 3;
  std::size_t written = 0;
  while (steady::now() < until && written + piece <= stream.size()) {
    REQUIRE_FALSE(c.write_raw(std::span(stream).subspan(written, piece)));
    written += piece;
    std::this_thread::sleep_for(o.read_timeout / 10);
  }
  CHECK(s.snapshot().closed.empty());
  // Every message completed so far came back, in order.
  const std::size_t complete = written / (1000 + 4);
  std::vector<std::byte> got;
  for (std::size_t i = 0; i < complete; ++i) {
    REQUIRE_FALSE(c.read(got));
    CHECK(same_bytes(got, pattern(1000, i)));
  }
  CHECK(s.snapshot().closed.empty());
}
