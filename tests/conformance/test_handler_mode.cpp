// Inline handler mode: events go to options.handler on engine threads; the
// handler echoes with engine.send(); poll() returns 0 at once.
#include <map>
#include <set>

#include "support.hpp"

using namespace ionet_test;

TEST_CASE("inline handler: echo inside the handler, poll returns 0",
          "[conformance][handler]") {
  // Which threads saw each connection's events, and how many handler calls
  // of one connection ran at once (never more than one: a connection's
  // events are delivered one at a time, in order; on IOCP each may come
  // from a different worker, on libuv they share one loop thread).
  std::mutex lock;
  std::map<ionet::connection_id, std::set<std::thread::id>> threads_of;
  std::map<ionet::connection_id, int> active;
  int overlaps = 0;
  std::atomic<std::uint64_t> send_failures{0};

  std::atomic<std::uint64_t> handler_calls{0};

  ionet::options o = local_options();
  o.threads = 2;
  // server::delivery::inline_handler installs options.handler; it calls this
  // callback, then notes the event for the checks below.
  server s(
      o,
      [&](ionet::engine& eng, const ionet::event& ev) {
        handler_calls.fetch_add(1);
        {
          std::lock_guard g(lock);
          threads_of[ev.conn].insert(std::this_thread::get_id());
          if (active[ev.conn]++ != 0) ++overlaps;
        }
        if (ev.type == ionet::event_type::message) {
          if (eng.send(ev.conn, ev.data)) send_failures.fetch_add(1);
        }
        std::lock_guard g(lock);
        --active[ev.conn];
      },
      server::delivery::inline_handler);
  REQUIRE(s.start().ok());

  // poll() in handler mode: 0, at once.
  std::vector<ionet::event> batch(16);
  const auto t0 = steady::now();
  CHECK(s.engine().poll(batch, 3000ms) == 0);
  CHECK(steady::now() - t0 < 1500ms);

  const int nclients = 8;
  const int per_client = scaled(40);
  std::vector<ionet::framed_client> clients(nclients);
  for (auto& c : clients) REQUIRE(connect_client(c, s.port()).ok());
  std::mutex problems_lock;
  std::vector<std::string> problems;
  std::vector<std::thread> workers;
  for (int k = 0; k < nclients; ++k) {
    workers.emplace_back([&, k] {
      auto& c = clients[static_cast<std::size_t>(k)];
      for (int i = 0; i < per_client; ++i) {
        const auto msg = pattern(static_cast<std::size_t>((i * 131 + k) % 9000),
                                 static_cast<std::uint64_t>(k) * 1000 +
                                     static_cast<std::uint64_t>(i));
        if (auto ec = echo_roundtrip(c, msg)) {
          std::lock_guard g(problems_lock);
          problems.push_back("client " + std::to_string(k) + " message " +
                             std::to_string(i) + ": " + ec.message());
          return;
        }
      }
      c.close();
    });
  }
  // poll() stays 0 while traffic flows.
  CHECK(s.engine().poll(batch, 10ms) == 0);
  for (auto& w : workers) w.join();
  {
    std::string all;
    for (const auto& p : problems) all += "\n  " + p;
    INFO(all);
    CHECK(problems.empty());
  }

  REQUIRE(s.wait_closed(nclients));
  const record r = s.snapshot();
  CHECK(r.connected.size() == static_cast<std::size_t>(nclients));
  CHECK(r.messages == static_cast<std::uint64_t>(nclients) *
                          static_cast<std::uint64_t>(per_client));
  for (const auto& c : r.closed) CHECK(c.reason == ionet::errc::peer_closed);
  CHECK(r.order_errors.empty());
  CHECK(send_failures.load() == 0);
  CHECK(handler_calls.load() == r.messages + 2 * nclients);
  {
    std::lock_guard g(lock);
    CHECK(threads_of.size() == static_cast<std::size_t>(nclients));
    CHECK(overlaps == 0);  // one connection's events one at a time
    for (const auto& [id, ts] : threads_of) {
      INFO("connection " << id);
      CHECK(ts.count(std::this_thread::get_id()) == 0);  // never the user's
    }
  }
  CHECK(s.engine().stats().events_pending == 0);
}

TEST_CASE("inline handler: send and close from inside the handler",
          "[conformance][handler]") {
  // The handler answers a message with two messages and closes: close()
  // flushes the replies first.
  server s(
      local_options(),
      [](ionet::engine& eng, const ionet::event& ev) {
        if (ev.type == ionet::event_type::message) {
          (void)eng.send(ev.conn, ev.data);
          (void)eng.send(ev.conn, ev.data);
          (void)eng.close(ev.conn);
        }
      },
      server::delivery::inline_handler);
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  const auto msg = pattern(3000, 9);
  REQUIRE_FALSE(c.write(msg));
  std::vector<std::byte> got;
  REQUIRE_FALSE(c.read(got));
  CHECK(same_bytes(got, msg));
  REQUIRE_FALSE(c.read(got));
  CHECK(same_bytes(got, msg));
  CHECK(read_until_closed(c) == ionet::errc::peer_closed);
  REQUIRE(s.wait_closed_id(*id));
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::closed_by_user);
}
