// One million sends to ids gone stale while connections churn through a
// few slots: every send either reaches the connection its id named, or is
// refused as stale_connection. Each message carries the id it was sent to,
// and each client checks that every message it reads carries its own, so a
// single stray byte would show.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "adversarial.hpp"

using namespace ionet_test;

namespace {

std::vector<std::byte> tagged(ionet::connection_id conn) {
  const std::uint64_t id = ionet::value_of(conn);
  std::vector<std::byte> m(16);
  for (int i = 0; i < 8; ++i) {
    m[static_cast<std::size_t>(i)] = static_cast<std::byte>(id >> (8 * i));
    m[static_cast<std::size_t>(8 + i)] = static_cast<std::byte>(~id >> (8 * i));
  }
  return m;
}

bool tag_of(std::span<const std::byte> m, ionet::connection_id& id) {
  if (m.size() != 16) return false;
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  for (int i = 0; i < 8; ++i) {
    a |= std::to_integer<std::uint64_t>(m[static_cast<std::size_t>(i)])
         << (8 * i);
    b |= std::to_integer<std::uint64_t>(m[static_cast<std::size_t>(8 + i)])
         << (8 * i);
  }
  id = ionet::connection_id{a};
  return a == ~b;
}

}  // namespace

TEST_CASE(
    "adversarial: a million sends to stale ids during churn reach no one else",
    "[adversarial]") {
  std::mutex lock;
  std::vector<ionet::connection_id> ids;  // every id ever connected
  std::string greeting_error;             // a greeting that could not be sent
  std::string client_error;               // the first client that failed
  ionet::options o = local_options();
  o.max_connections = 8;  // few slots: reused constantly
  // Each new connection is told its id first, tagged like every message.
  // Should the senders below fill the queues to a cap, send() refuses the
  // greeting (queue_full, or pool_exhausted). When every 20-byte frame
  // held a 512-byte slice of its own, 16,384 queued frames emptied the
  // pool: 5,670 to 253,903 refusals per run (5 runs), the greeting among
  // them; since small messages share slices, none (5 runs). It must still
  // go out: the senders stop once there are enough connections, possibly
  // before sending anything to the newest, whose client would then wait
  // for nothing. So it is retried while the refusal is one that passes,
  // until it is sent or its connection is gone (its client read one of
  // the senders' messages and left, or gave up: counted there).
  server s(o, [&](ionet::engine& eng, const ionet::event& e) {
    if (e.type != ionet::event_type::connected) return;
    {
      std::lock_guard g(lock);
      ids.push_back(e.conn);
    }
    const auto deadline = steady::now() + wait_budget;
    for (;;) {
      const std::error_code ec = eng.send(e.conn, tagged(e.conn));
      const bool gone =
          ec == ionet::errc::stale_connection || ec == ionet::errc::closing;
      if (!ec || gone) return;
      if ((ec == ionet::errc::pool_exhausted ||
           ec == ionet::errc::queue_full) &&
          steady::now() < deadline) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      std::lock_guard g(lock);
      greeting_error = Catch::StringMaker<std::error_code>::convert(ec);
      return;
    }
  });
  REQUIRE(s.start().ok());
  auto connections = [&] {
    std::lock_guard g(lock);
    return ids.size();
  };

  std::atomic<bool> go{true};
  std::atomic<std::uint64_t> sends{0}, stale{0}, delivered_sends{0};
  std::atomic<std::uint64_t> read_ok{0}, strays{0}, client_errors{0},
      refused{0};
  const std::uint64_t target = sanitized || slow_platform ? 200000 : 1000000;

  std::vector<std::thread> churners;
  for (int t = 0; t < 4; ++t) {
    churners.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      while (go.load()) {
        ionet::framed_client c;
        if (!connect_client(c, s.port())) continue;
        std::vector<std::byte> m;
        ionet::connection_id mine{};
        if (const std::error_code ec = c.read(m, 5s); ec && !is_timeout(ec)) {
          // Refused: all 8 slots still held by connections whose close has
          // not finished (checked against stats().rejected below).
          refused.fetch_add(1);
          continue;
        } else if (ec || !tag_of(m, mine)) {
          if (client_errors.fetch_add(1) == 0) {
            std::lock_guard g(lock);
            client_error =
                "client " + std::to_string(t) + ", first read: " +
                (ec ? "nothing in 5 s"
                    : std::to_string(m.size()) + " bytes, not a tag");
          }
          continue;
        }
        // Read for a while: everything must be tagged with our own id.
        const auto until =
            steady::now() + std::chrono::milliseconds(5 + rng() % 20);
        while (steady::now() < until) {
          if (c.read(m, 2ms)) continue;  // timed out: nothing came
          ionet::connection_id got{};
          if (tag_of(m, got) && got == mine) {
            read_ok.fetch_add(1);
          } else {
            strays.fetch_add(1);
          }
        }
        if (rng() % 2) c.reset();
      }
    });
  }
  std::vector<std::thread> senders;
  for (int t = 0; t < 3; ++t) {
    senders.emplace_back([&, t] {
      std::mt19937_64 rng(100 + static_cast<unsigned>(t));
      std::vector<ionet::connection_id> known;
      // Until a million sends and 200 connections through the 8 slots (each
      // slot reused ~25 times), within a minute.
      const auto limit = steady::now() + 60s;
      auto enough = [&] {
        std::lock_guard g(lock);
        return sends.load() >= target && ids.size() >= 200;
      };
      while (!enough() && steady::now() < limit) {
        {
          std::lock_guard g(lock);
          known = ids;
        }
        if (known.empty()) {
          std::this_thread::yield();
          continue;
        }
        for (int i = 0; i < 1000; ++i) {
          // Mostly recent ids (live or just gone), some ancient ones.
          const std::size_t n = known.size();
          const std::size_t pick =
              rng() % 4 ? n - 1 - rng() % std::min<std::size_t>(n, 16)
                        : rng() % n;
          const ionet::connection_id id = known[pick];
          const std::error_code ec = s.engine().send(id, tagged(id));
          sends.fetch_add(1);
          if (ec == ionet::errc::stale_connection ||
              ec == ionet::errc::closing) {
            stale.fetch_add(1);
          } else if (!ec) {
            delivered_sends.fetch_add(1);
          }
        }
      }
    });
  }
  for (auto& t : senders) t.join();
  go.store(false);
  for (auto& t : churners) t.join();
  WARN("sends " << sends.load() << ", refused as stale " << stale.load()
                << ", accepted " << delivered_sends.load()
                << ", read back by their own connection " << read_ok.load()
                << ", connections " << connections() << ", refused "
                << refused.load());
  CHECK(sends.load() >= target);
  CHECK(strays.load() == 0);  // not one message reached another connection
  {
    std::lock_guard g(lock);
    INFO("first client error: " << client_error);
    INFO("greeting not sent: " << greeting_error);
    CHECK(client_errors.load() == 0);
    CHECK(greeting_error.empty());
  }
  CHECK(stale.load() > target / 2);
  CHECK(read_ok.load() > 0);
  CHECK(connections() >= 200);
  const auto st = s.engine().stats();
  CHECK(st.send_stale >= stale.load());
  CHECK(refused.load() <= st.rejected);
  s.stop();
  check_stopped(s);
}

TEST_CASE(
    "adversarial: set_context on an id going stale never lands on the "
    "connection that reuses its slot",
    "[adversarial]") {
  // One slot, reused by every connection. A thread sets the context of the
  // newest connection, tagged with that connection's id, over and over,
  // while clients come and go; the store must land on that connection or
  // nowhere (stale_connection), never on the next one in the slot.
  ionet::options o = local_options();
  o.max_connections = 1;
  auto tag = [](ionet::connection_id id) {
    return reinterpret_cast<void*>(
        static_cast<std::uintptr_t>(ionet::value_of(id)));
  };
  std::atomic<ionet::connection_id> newest{ionet::connection_id{}};
  std::mutex lock;
  std::uint64_t wrong = 0;  // events that saw another connection's tag
  std::string first_wrong;
  server s(o, [&](ionet::engine&, const ionet::event& e) {
    if (e.type == ionet::event_type::connected) newest.store(e.conn);
    void* ctx = e.context();
    if (ctx == nullptr || ctx == tag(e.conn)) return;
    std::lock_guard g(lock);
    if (wrong++ == 0) {
      first_wrong = "connection " + std::to_string(ionet::value_of(e.conn)) +
                    " had the tag " +
                    std::to_string(reinterpret_cast<std::uintptr_t>(ctx));
    }
  });
  REQUIRE(s.start().ok());

  std::atomic<bool> go{true};
  std::atomic<std::uint64_t> landed{0}, refused{0};
  std::thread setter([&] {
    while (go.load(std::memory_order_relaxed)) {
      const ionet::connection_id id = newest.load();
      if (id == ionet::connection_id{}) {
        std::this_thread::yield();
        continue;
      }
      if (s.engine().set_context(id, tag(id))) {
        refused.fetch_add(1, std::memory_order_relaxed);
      } else {
        landed.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  // Clients one after another (the slot holds one), for 3 s or 20,000.
  const auto until = steady::now() + 3s;
  int clients = 0;
  for (; clients < 20000 && steady::now() < until; ++clients) {
    ionet::framed_client c;
    if (!connect_client(c, s.port())) continue;
    if (landed.load() == 0 && clients % 100 == 0) {
      // Until a store has landed, now and then a client stays a while, so
      // that both outcomes are tried: one that leaves at once may be gone
      // before the setter learns its id (under TSan on the simulator,
      // every one of 15,980 was). Not for long: it may be one the server
      // turned away, its slot not yet free.
      const std::uint64_t before = 0;
      const auto give_up = steady::now() + 100ms;
      while (landed.load() == before && steady::now() < give_up) {
        std::this_thread::sleep_for(1ms);
      }
    }
    if (clients % 2) {
      c.reset();
    } else {
      c.close();
    }
  }
  go.store(false);
  setter.join();
  s.stop();
  WARN(clients << " clients, set_context landed " << landed.load()
               << " times, refused as stale " << refused.load());
  {
    std::lock_guard g(lock);
    INFO(first_wrong);
    CHECK(wrong == 0);
  }
  for (const auto& c : s.snapshot().closed) {
    INFO("closed connection " << c.id);
    CHECK((c.context == nullptr || c.context == tag(c.id)));
  }
  CHECK(landed.load() > 0);
  CHECK(refused.load() > 0);
}
