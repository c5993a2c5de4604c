// Length-prefix echo: messages from 0 bytes to max_message_bytes survive any
// split of the byte stream, one frame at a time or pipelined.
#include <random>

#include "support.hpp"

using namespace ionet_test;

namespace {

constexpr std::uint32_t max_message = 256 * 1024;

ionet::options echo_options() {
  ionet::options o = local_options();
  o.max_message_bytes = max_message;
  o.max_queued_bytes = 4 * max_message + 4;
  return o;
}

// Cuts [0, total) into random pieces: often tiny, sometimes large, so that
// headers and payloads are split everywhere.
std::vector<std::size_t> random_pieces(std::size_t total, std::mt19937& rng) {
  static constexpr std::size_t caps[] = {1, 3, 7, 64, 700, 9000, 70000};
  std::vector<std::size_t> pieces;
  std::size_t done = 0;
  while (done < total) {
    const std::size_t cap = caps[rng() % std::size(caps)];
    const std::size_t n = std::min<std::size_t>(total - done, 1 + rng() % cap);
    pieces.push_back(n);
    done += n;
  }
  return pieces;
}

std::error_code write_in_pieces(ionet::framed_client& c,
                                std::span<const std::byte> bytes,
                                std::mt19937& rng) {
  std::size_t at = 0;
  for (std::size_t n : random_pieces(bytes.size(), rng)) {
    if (auto ec = c.write_raw(bytes.subspan(at, n))) return ec;
    at += n;
  }
  return {};
}

}  // namespace

TEST_CASE(
    "echo: messages from 0 bytes to max_message_bytes written in random pieces",
    "[conformance][echo]") {
  server s(echo_options());
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, s.port()).ok());

  std::vector<std::size_t> sizes = {0,          1,
                                    2,          3,
                                    4,          5,
                                    15,         16,
                                    17,         511,
                                    512,        513,
                                    1023,       1024,
                                    1025,       4095,
                                    4096,       4097,
                                    65535,      65536,
                                    65537,      max_message - 1,
                                    max_message};
  std::mt19937 rng(20240611);
  const int extra = scaled(24);
  for (int i = 0; i < extra; ++i) {
    // Mostly small, some up to the limit.
    sizes.push_back(i % 3 == 0 ? rng() % (max_message + 1) : rng() % 3000);
  }

  std::uint64_t expect_bytes = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::size_t n = sizes[i];
    INFO("message " << i << " of " << n << " bytes");
    const auto msg = pattern(n, 1000 + i);
    const auto f = frame(msg);
    REQUIRE_FALSE(write_in_pieces(c, f, rng));
    std::vector<std::byte> back;
    const std::error_code ec = c.read(back, wait_budget);
    REQUIRE_FALSE(ec);
    REQUIRE(back.size() == n);
    CHECK(first_difference(back, msg) == -1);
    expect_bytes += n;
  }

  const record r = s.snapshot();
  CHECK(r.messages == sizes.size());
  CHECK(r.message_bytes == expect_bytes);
  CHECK(r.echo_failures == 0);
  CHECK(r.order_errors.empty());
}

TEST_CASE("echo: pipelined frames split at random points come back in order",
          "[conformance][echo]") {
  server s(echo_options());
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, s.port()).ok());

  std::mt19937 rng(777);
  const int count = scaled(400);
  std::vector<std::size_t> sizes;
  std::vector<std::byte> stream;
  for (int i = 0; i < count; ++i) {
    std::size_t n = rng() % 2000;
    if (i % 50 == 7) n = rng() % (max_message + 1);  // a few big ones
    if (i % 37 == 0) n = 0;
    sizes.push_back(n);
    const auto f = frame(pattern(n, 5000 + static_cast<std::uint64_t>(i)));
    stream.insert(stream.end(), f.begin(), f.end());
  }

  // The whole stream is written cut anywhere (frames straddle writes).
  // framed_client is used by one thread at a time, so this thread reads
  // the echoes of complete frames whenever more than a window of them is
  // waiting: the unread bytes stay well below what the socket buffers and
  // the server's queue can hold, so neither side stalls.
  constexpr std::size_t window = 64 * 1024;
  std::vector<std::size_t> frame_end;  // stream offset where frame i ends
  {
    std::size_t at = 0;
    for (std::size_t n : sizes) frame_end.push_back(at += 4 + n);
  }
  std::mt19937 wrng(4242);
  const auto pieces = random_pieces(stream.size(), wrng);
  std::size_t written = 0, complete = 0, got = 0, unread_bytes = 0;
  std::string problem;
  auto read_one = [&]() -> bool {
    std::vector<std::byte> back;
    if (auto ec = c.read(back, wait_budget)) {
      problem = "read " + std::to_string(got) + ": " + ec.message();
      return false;
    }
    const auto want = pattern(sizes[got], 5000 + got);
    if (!same_bytes(back, want)) {
      problem = "message " + std::to_string(got) + " differs (got " +
                std::to_string(back.size()) + " bytes, want " +
                std::to_string(want.size()) + ")";
      return false;
    }
    unread_bytes -= 4 + sizes[got];
    ++got;
    return true;
  };
  for (std::size_t n : pieces) {
    if (!problem.empty()) break;
    if (auto ec = c.write_raw(std::span(stream).subspan(written, n))) {
      problem = "write: " + ec.message();
      break;
    }
    written += n;
    while (complete < frame_end.size() && frame_end[complete] <= written) {
      unread_bytes += 4 + sizes[complete];
      ++complete;
    }
    while (problem.empty() && unread_bytes > window && got < complete)
      read_one();
  }
  while (problem.empty() && got < complete) read_one();
  INFO(problem);
  CHECK(problem.empty());
  CHECK(written == stream.size());
  CHECK(got == static_cast<std::size_t>(count));
  CHECK(s.snapshot().order_errors.empty());
}

TEST_CASE(
    "echo: a connection can exchange messages in both directions repeatedly",
    "[conformance][echo]") {
  server s(echo_options());
  REQUIRE(s.start().ok());
  std::vector<ionet::framed_client> clients(3);
  for (auto& c : clients) REQUIRE(connect_client(c, s.port()).ok());
  // Interleave the clients so the server serves them alternately.
  const int rounds = scaled(50);
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t k = 0; k < clients.size(); ++k) {
      const auto msg = pattern(static_cast<std::size_t>(r * 37 % 1500),
                               static_cast<std::size_t>(r) * 10 + k);
      INFO("round " << r << " client " << k);
      REQUIRE_FALSE(echo_roundtrip(clients[k], msg));
    }
  }
  CHECK(s.snapshot().messages ==
        static_cast<std::uint64_t>(rounds) * clients.size());
}

TEST_CASE(
    "echo: a peer that reads in bursts is paused and resumed, not cut off",
    "[conformance][echo]") {
  // While the client sleeps, its echoes fill the 64 KiB queue and the
  // server stops reading it; when it reads again the queue drains and
  // reading resumes, often in the same batch of completions as the pause.
  // io_uring paused by cancelling its multishot receive: resumed before
  // the cancel's completion came, it took that completion for an error
  // and reset the connection.
  constexpr std::uint32_t msg_size = 16 * 1024;
  ionet::options o = local_options();
  o.max_message_bytes = msg_size;
  o.max_queued_bytes = 4 * (msg_size + 4);
  server s(o);
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, s.port()).ok());

  // 16 MiB (4 under Wine), read 64 KiB at a time with a pause of 1 ms
  // between, from a thread of its own: the writes below block whenever the
  // server stops reading. The reader starts only once the server has
  // paused: before, a run whose echoes all fit the sockets' buffers never
  // paused at all (seen under TSan). 16 MiB is more than loopback buffers
  // hold, so the first pause comes. (On io_uring before the fix, 4 of 10
  // runs were reset.)
  const std::uint32_t count = slow_platform ? 256 : 1024;
  std::uint32_t read_ok = 0;
  std::string read_error;
  std::thread reader([&] {
    const auto deadline = steady::now() + wait_budget;
    while (s.engine().stats().read_pauses == 0 && steady::now() < deadline)
      std::this_thread::sleep_for(1ms);
    std::vector<std::byte> got;
    while (read_ok < count) {
      for (int i = 0; i < 4 && read_ok < count; ++i, ++read_ok) {
        if (const auto ec = c.read(got, wait_budget)) {
          read_error = "echo " + std::to_string(read_ok) + ": " + ec.message();
          return;
        }
        if (!same_bytes(got, pattern(msg_size, read_ok))) {
          read_error = "echo " + std::to_string(read_ok) + " differs";
          return;
        }
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  std::uint32_t written = 0;
  for (; written < count; ++written) {
    if (c.write(pattern(msg_size, written))) break;
  }
  reader.join();
  INFO(read_error);
  CHECK(written == count);
  CHECK(read_ok == count);
  const auto st = s.engine().stats();
  INFO("read pauses " << st.read_pauses);
  CHECK(st.read_pauses > 0);
  CHECK(s.snapshot().echo_failures == 0);
  CHECK(s.snapshot().closed.empty());  // still open: nothing cut it off
}

TEST_CASE(
    "echo: an inline handler's replies and another thread's sends to a "
    "reader that lags arrive whole and in order",
    "[conformance][echo]") {
  // An inline handler's send() runs on the connection's own thread, where a
  // connection with nothing queued is written at once from the handler's
  // buffer and only what the socket does not take is queued. With a reader
  // that lags, the socket fills: replies go out whole, in part, or not at
  // once, while another thread's sends to the same connection queue behind
  // them. Every frame must arrive whole, each sender's in its order.
  ionet::options o = local_options();
  o.threads = 2;
  o.max_message_bytes = 4096;
  o.max_queued_bytes = 4u << 20;
  server s(o, {}, server::delivery::inline_handler);
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);

  const std::uint32_t echoes = slow_platform ? 1000 : 4000;
  const std::uint32_t sides = echoes / 2;
  constexpr std::size_t side_size = 333;
  constexpr std::uint64_t side_seed = 1u << 30;
  std::vector<std::size_t> sizes(echoes);
  std::mt19937 rng(11);
  for (auto& n : sizes) n = rng() % 3000;

  std::uint32_t got_echoes = 0;
  std::uint32_t got_sides = 0;
  std::string read_error;
  std::thread reader([&] {
    std::vector<std::byte> got;
    for (std::uint32_t i = 0; got_echoes + got_sides < echoes + sides; ++i) {
      if (const auto ec = c.read(got, wait_budget)) {
        read_error = "frame " + std::to_string(i) + ": " + ec.message();
        return;
      }
      if (got_echoes < echoes &&
          same_bytes(got, pattern(sizes[got_echoes], got_echoes))) {
        ++got_echoes;
      } else if (got_sides < sides &&
                 same_bytes(got, pattern(side_size, side_seed + got_sides))) {
        ++got_sides;
      } else {
        read_error =
            "frame " + std::to_string(i) + " (" + std::to_string(got.size()) +
            " bytes) is neither the next echo (" + std::to_string(got_echoes) +
            ") nor the next send (" + std::to_string(got_sides) + ")";
        return;
      }
      if (i % 8 == 0) std::this_thread::sleep_for(1ms);  // lags
    }
  });
  std::uint32_t side_errors = 0;
  std::thread sender([&] {
    for (std::uint32_t j = 0; j < sides; ++j) {
      const auto m = pattern(side_size, side_seed + j);
      std::error_code ec;
      for (int tries = 0; tries < 5000; ++tries) {
        ec = s.engine().send(*id, m);
        if (ec != ionet::errc::queue_full) break;
        std::this_thread::sleep_for(1ms);
      }
      if (ec) ++side_errors;
      if (j % 16 == 0) std::this_thread::sleep_for(1ms);
    }
  });
  std::uint32_t written = 0;
  for (; written < echoes; ++written) {
    if (c.write(pattern(sizes[written], written))) break;
  }
  sender.join();
  reader.join();
  INFO(read_error);
  CHECK(written == echoes);
  CHECK(side_errors == 0);
  CHECK(got_echoes == echoes);
  CHECK(got_sides == sides);
  CHECK(s.snapshot().echo_failures == 0);
  CHECK(s.snapshot().closed.empty());
}
