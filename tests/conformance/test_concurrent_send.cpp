// send() from many threads at once, to the same connection and to different
// ones: every message arrives intact, and the messages of one thread to one
// connection arrive in the order that thread sent them.
#include "support.hpp"

using namespace ionet_test;

namespace {

// A message: [u32 thread][u32 seq][u32 connection index] + pattern bytes
// derived from those three, of a length derived from them too.
std::uint64_t seed_of(std::uint32_t t, std::uint32_t seq, std::uint32_t c) {
  return (std::uint64_t{t} << 40) ^ (std::uint64_t{seq} << 8) ^ c;
}

std::vector<std::byte> make_message(std::uint32_t t, std::uint32_t seq,
                                    std::uint32_t c, std::size_t max_body) {
  const std::uint64_t seed = seed_of(t, seq, c);
  const std::size_t body = mix64(seed) % (max_body + 1);
  std::vector<std::byte> m(12 + body);
  put_u32be(m.data(), t);
  put_u32be(m.data() + 4, seq);
  put_u32be(m.data() + 8, c);
  fill_pattern(std::span(m).subspan(12), seed);
  return m;
}

void run_concurrent_send(std::uint32_t max_message, std::uint32_t max_queued,
                         std::size_t max_body, int per_thread) {
  constexpr std::uint32_t senders = 8;
  constexpr std::uint32_t conns = 4;
  const auto count = static_cast<std::uint32_t>(per_thread);

  ionet::options o = local_options();
  o.max_message_bytes = max_message;
  o.max_queued_bytes = max_queued;
  o.threads = 2;
  // The clients never send: nothing to do with events but release them.
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());

  std::vector<ionet::framed_client> clients(conns);
  std::vector<ionet::connection_id> ids;
  for (auto& c : clients) {
    std::string why;
    auto id = connect_one(s, c, why);
    INFO(why);
    REQUIRE(id);
    ids.push_back(*id);
  }

  std::mutex problems_lock;
  std::vector<std::string> problems;
  auto problem = [&](std::string what) {
    std::lock_guard g(problems_lock);
    if (problems.size() < 20) problems.push_back(std::move(what));
  };

  // Readers: one per connection (each client used by one thread only).
  std::atomic<std::uint64_t> received{0};
  std::vector<std::thread> readers;
  for (std::uint32_t c = 0; c < conns; ++c) {
    readers.emplace_back([&, c] {
      std::vector<std::uint32_t> next(senders, 0);
      const std::uint64_t expect = std::uint64_t{senders} * count;
      std::vector<std::byte> m;
      for (std::uint64_t i = 0; i < expect; ++i) {
        if (auto ec = clients[c].read(m, wait_budget)) {
          problem("conn " + std::to_string(c) + " read after " +
                  std::to_string(i) + " messages: " + ec.message());
          return;
        }
        if (m.size() < 12) {
          problem("conn " + std::to_string(c) + ": short message");
          return;
        }
        const std::uint32_t t = get_u32be(m.data());
        const std::uint32_t seq = get_u32be(m.data() + 4);
        const std::uint32_t to = get_u32be(m.data() + 8);
        if (t >= senders || to != c) {
          problem("conn " + std::to_string(c) + ": message for conn " +
                  std::to_string(to) + " from thread " + std::to_string(t));
          return;
        }
        if (seq != next[t]) {
          problem("conn " + std::to_string(c) + ": thread " +
                  std::to_string(t) + " seq " + std::to_string(seq) +
                  " arrived, expected " + std::to_string(next[t]));
          return;
        }
        ++next[t];
        if (!same_bytes(m, make_message(t, seq, c, max_body))) {
          problem("conn " + std::to_string(c) + ": thread " +
                  std::to_string(t) + " seq " + std::to_string(seq) +
                  " corrupted");
          return;
        }
        received.fetch_add(1);
      }
    });
  }

  // Senders: each thread sends to every connection, starting at a different
  // one, so the same connection gets concurrent sends from many threads and
  // each thread alternates between connections.
  std::atomic<std::uint64_t> sent{0}, queue_full{0};
  std::atomic<bool> start{false};
  std::vector<std::thread> senders_threads;
  for (std::uint32_t t = 0; t < senders; ++t) {
    senders_threads.emplace_back([&, t] {
      while (!start.load()) std::this_thread::yield();
      const auto deadline = steady::now() + wait_budget;
      for (std::uint32_t seq = 0; seq < count; ++seq) {
        for (std::uint32_t k = 0; k < conns; ++k) {
          const std::uint32_t c = (k + t) % conns;
          const auto m = make_message(t, seq, c, max_body);
          for (;;) {
            const std::error_code ec = s.engine().send(ids[c], m);
            if (!ec) {
              sent.fetch_add(1);
              break;
            }
            if (ec == ionet::errc::queue_full && steady::now() < deadline) {
              // Backpressure: the reader will make room.
              queue_full.fetch_add(1);
              std::this_thread::sleep_for(std::chrono::microseconds(200));
              continue;
            }
            problem("thread " + std::to_string(t) + " send to conn " +
                    std::to_string(c) + ": " + ec.message());
            return;
          }
        }
      }
    });
  }
  start.store(true);
  for (auto& th : senders_threads) th.join();
  for (auto& th : readers) th.join();

  INFO("first problems: " << [&] {
    std::string all;
    for (const auto& p : problems) all += "\n  " + p;
    return all;
  }());
  INFO("queue_full retries: " << queue_full.load());
  CHECK(problems.empty());
  const std::uint64_t total = std::uint64_t{senders} * conns * count;
  CHECK(sent.load() == total);
  CHECK(received.load() == total);
  CHECK(s.engine().stats().messages_sent == total);
  // Nothing more than was sent arrives.
  for (auto& c : clients) {
    std::vector<std::byte> extra;
    CHECK(is_timeout(c.read(extra, 50ms)));
  }
}

}  // namespace

TEST_CASE("concurrent send: 8 threads to 4 connections, roomy queues",
          "[conformance][concurrent_send]") {
  run_concurrent_send(64 * 1024, 4u << 20, 2000, scaled(400));
}

TEST_CASE(
    "concurrent send: 8 threads to 4 connections, tight queues (queue_full under contention)",
    "[conformance][concurrent_send]") {
  // The queue holds only a few messages: senders keep hitting queue_full
  // while other threads' sends to the same connection succeed.
  run_concurrent_send(4096, 4096 + 4 + 2048, 3000, scaled(200));
}
