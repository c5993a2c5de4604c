// 1000 clients connected at once, served by one engine: every byte of every
// echo is checked, every connection gets its own id, every one closes with
// peer_closed.
#include <set>

#include "support.hpp"

using namespace ionet_test;

TEST_CASE("many clients: 1000 concurrent connections echo, every byte checked",
          "[conformance][many]") {
  constexpr int clients_total = 1000;
  constexpr int threads = 4;
  constexpr int per_thread = clients_total / threads;
  const int rounds = (sanitized || slow_platform) ? 2 : 4;

  ionet::options o = local_options();
  o.max_connections = 2 * clients_total;
  o.threads = 2;
  server s(o);
  REQUIRE(s.start().ok());
  const std::uint16_t port = s.port();

  std::mutex problems_lock;
  std::vector<std::string> problems;
  std::atomic<bool> failing{false};  // after a problem, stop waiting on reads
  auto problem = [&](std::string what) {
    failing.store(true);
    std::lock_guard g(problems_lock);
    if (problems.size() < 20) problems.push_back(std::move(what));
  };
  std::atomic<int> connected{0};
  std::atomic<bool> go{false};
  std::atomic<std::uint64_t> checked_bytes{0};

  auto message_for = [](int client, int round) {
    const std::uint64_t seed = static_cast<std::uint64_t>(client) * 1000 + round;
    return pattern(1 + mix64(seed) % 3000, seed);
  };

  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::vector<ionet::framed_client> mine(per_thread);
      for (int k = 0; k < per_thread; ++k) {
        if (ionet::status st = connect_client(mine[static_cast<std::size_t>(k)], port); !st) {
          problem("connect " + std::to_string(t * per_thread + k) + ": " + st.to_string());
        } else {
          connected.fetch_add(1);
        }
      }
      // Hold every connection open until all of them are.
      const auto deadline = steady::now() + wait_budget;
      while (!go.load() && steady::now() < deadline) std::this_thread::sleep_for(1ms);

      for (int r = 0; r < rounds; ++r) {
        // A message on every connection first, then every reply: all of this
        // thread's connections have a message in flight at once.
        for (int k = 0; k < per_thread; ++k) {
          auto& c = mine[static_cast<std::size_t>(k)];
          if (!c.is_open()) continue;
          if (auto ec = c.write(message_for(t * per_thread + k, r))) {
            problem("write " + std::to_string(t * per_thread + k) + ": " + ec.message());
            c.close();
          }
        }
        for (int k = 0; k < per_thread; ++k) {
          auto& c = mine[static_cast<std::size_t>(k)];
          if (!c.is_open()) continue;
          const int id = t * per_thread + k;
          std::vector<std::byte> back;
          if (auto ec = c.read(back, failing.load() ? 100ms : wait_budget)) {
            problem("read " + std::to_string(id) + ": " + ec.message());
            c.close();
            continue;
          }
          const auto want = message_for(id, r);
          if (!same_bytes(back, want)) {
            problem("client " + std::to_string(id) + " round " + std::to_string(r) +
                    ": echo differs at byte " +
                    std::to_string(first_difference(back, want)));
          } else {
            checked_bytes.fetch_add(back.size());
          }
        }
      }
      for (auto& c : mine) c.close();
    });
  }

  // All 1000 are open at the same time before any message moves.
  const bool all_open = s.wait_connected(clients_total);
  const std::uint64_t open_then = s.engine().stats().connections_open;
  go.store(true);
  for (auto& w : workers) w.join();

  INFO("first problems: " << [&] {
    std::string all;
    for (const auto& p : problems) all += "\n  " + p;
    return all;
  }());
  CHECK(problems.empty());
  CHECK(connected.load() == clients_total);
  CHECK(all_open);
  CHECK(open_then == static_cast<std::uint64_t>(clients_total));

  std::uint64_t want_bytes = 0;
  for (int id = 0; id < clients_total; ++id) {
    for (int r = 0; r < rounds; ++r) want_bytes += message_for(id, r).size();
  }
  CHECK(checked_bytes.load() == want_bytes);

  REQUIRE(s.wait_closed(clients_total));
  const record r = s.snapshot();
  CHECK(r.connected.size() == static_cast<std::size_t>(clients_total));
  CHECK(std::set<ionet::connection_id>(r.connected.begin(), r.connected.end()).size() ==
        static_cast<std::size_t>(clients_total));
  std::size_t peer_closed = 0;
  for (const auto& c : r.closed) peer_closed += c.reason == ionet::errc::peer_closed;
  CHECK(peer_closed == static_cast<std::size_t>(clients_total));
  CHECK(r.messages == static_cast<std::uint64_t>(clients_total) * rounds);
  CHECK(r.echo_failures == 0);
  CHECK(r.order_errors.empty());
}
