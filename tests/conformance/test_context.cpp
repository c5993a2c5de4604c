// Per-connection context: set on connected, seen by every later event of
// that connection (even in the same batch), handed back by the closed
// event; a new connection starts with none; a stale id is refused.
#include <map>

#include "support.hpp"

using namespace ionet_test;

namespace {

struct conn_ctx {
  ionet::connection_id id{};
  int index = 0;
};

void run_context(server::delivery d) {
  constexpr int nclients = 6;
  const int per_client = 10;
  // Contexts live here; the handler hands them out in connect order.
  std::vector<conn_ctx> contexts(nclients);
  std::mutex lock;
  std::map<ionet::connection_id, conn_ctx*> given;
  std::atomic<int> next{0};
  std::atomic<int> bad_initial{0}, set_failed{0}, mismatches{0},
      matched_messages{0};

  server s(
      local_options(),
      [&](ionet::engine& eng, const ionet::event& ev) {
        std::lock_guard g(lock);
        if (ev.type == ionet::event_type::connected) {
          if (ev.context() != nullptr) bad_initial.fetch_add(1);
          const int i = next.fetch_add(1);
          if (i >= nclients) return;
          conn_ctx* c = &contexts[static_cast<std::size_t>(i)];
          c->id = ev.conn;
          c->index = i;
          given[ev.conn] = c;
          if (eng.set_context(ev.conn, c)) set_failed.fetch_add(1);
          // Seen at once through the event that is being handled.
          if (ev.context() != c) mismatches.fetch_add(1);
          return;
        }
        auto it = given.find(ev.conn);
        if (it == given.end() || ev.context() != it->second) {
          mismatches.fetch_add(1);
        } else if (ev.type == ionet::event_type::message) {
          matched_messages.fetch_add(1);
        }
      },
      d);
  REQUIRE(s.start().ok());

  std::vector<ionet::framed_client> clients(nclients);
  for (auto& c : clients) {
    REQUIRE(connect_client(c, s.port()).ok());
    // Messages right behind the connect, so they may share a batch with
    // the connected event.
    for (int i = 0; i < per_client; ++i)
      REQUIRE_FALSE(c.write(pattern(100, 1)));
  }
  REQUIRE(s.wait_until([&](const record& r) {
    return r.messages == static_cast<std::uint64_t>(nclients) * per_client;
  }));
  for (auto& c : clients) c.close();
  REQUIRE(s.wait_closed(nclients));

  CHECK(bad_initial.load() == 0);
  CHECK(set_failed.load() == 0);
  CHECK(mismatches.load() == 0);
  CHECK(matched_messages.load() == nclients * per_client);
  // The closed event hands each context back.
  const record r = s.snapshot();
  for (const auto& c : r.closed) {
    std::lock_guard g(lock);
    INFO("connection " << c.id);
    REQUIRE(given.count(c.id) == 1);
    CHECK(c.context == given[c.id]);
    if (c.context == given[c.id])
      CHECK(static_cast<conn_ctx*>(c.context)->id == c.id);
    // A closed id takes no context any more.
    CHECK(s.engine().set_context(c.id, &contexts[0]) ==
          ionet::errc::stale_connection);
  }
}

}  // namespace

TEST_CASE(
    "context: set on connected, seen by later events, handed back on closed (pull)",
    "[conformance][context]") {
  run_context(server::delivery::pull);
}

TEST_CASE(
    "context: set on connected, seen by later events, handed back on closed (inline)",
    "[conformance][context]") {
  run_context(server::delivery::inline_handler);
}

TEST_CASE("context: a connection reusing a slot starts with no context",
          "[conformance][context]") {
  ionet::options o = local_options();
  o.max_connections = 1;  // every connection reuses slot 0
  std::atomic<int> non_null_on_connect{0};
  int marker = 0;
  server s(o, [&](ionet::engine& eng, const ionet::event& ev) {
    if (ev.type == ionet::event_type::connected) {
      if (ev.context() != nullptr) non_null_on_connect.fetch_add(1);
      (void)eng.set_context(ev.conn, &marker);
    }
  });
  REQUIRE(s.start().ok());

  const int rounds = 5;
  int served = 0;
  const auto deadline = steady::now() + wait_budget;
  while (served < rounds && steady::now() < deadline) {
    ionet::framed_client c;
    const std::size_t before = s.snapshot().connected.size();
    if (!connect_client(c, s.port())) continue;
    // Refused while the previous connection's slot is still being freed:
    // try again.
    if (!s.wait_connected(before + 1, 500ms)) continue;
    const auto id = s.snapshot().connected.at(before);
    c.close();
    REQUIRE(s.wait_closed_id(id));
    CHECK(s.snapshot().closed_of(id)->context == &marker);
    ++served;
  }
  CHECK(served == rounds);
  CHECK(non_null_on_connect.load() == 0);
}

TEST_CASE("context: set_context on a stale id gives stale_connection",
          "[conformance][context]") {
  server s;
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  int a = 0, b = 0;
  CHECK_FALSE(s.engine().set_context(*id, &a));
  CHECK_FALSE(s.engine().set_context(*id, &b));  // may be replaced
  c.close();
  REQUIRE(s.wait_closed_id(*id));
  CHECK(s.snapshot().closed_of(*id)->context == &b);
  CHECK(s.engine().set_context(*id, &a) == ionet::errc::stale_connection);
  CHECK(s.engine().set_context(ionet::connection_id{}, &a) ==
        ionet::errc::stale_connection);
}
