// Connection ids: different connections have different ids, and an id is
// never issued again within a run, even when its slot is reused.
#include <set>

#include "support.hpp"

using namespace ionet_test;

TEST_CASE("ids: concurrent connections have distinct ids",
          "[conformance][ids]") {
  server s;
  REQUIRE(s.start().ok());
  const int n = 32;
  std::vector<ionet::framed_client> clients(n);
  for (auto& c : clients) REQUIRE(connect_client(c, s.port()).ok());
  REQUIRE(s.wait_connected(n));
  const record r = s.snapshot();
  CHECK(std::set<ionet::connection_id>(r.connected.begin(), r.connected.end())
            .size() == static_cast<std::size_t>(n));
  // Each id reaches its own connection: a message sent to one id arrives on
  // exactly one client.
  for (std::size_t i = 0; i < r.connected.size(); ++i) {
    CHECK_FALSE(s.engine().send(r.connected[i], pattern(8, i)));
  }
  std::set<std::vector<std::byte>> got;
  for (auto& c : clients) {
    std::vector<std::byte> m;
    REQUIRE_FALSE(c.read(m));
    got.insert(m);
  }
  CHECK(got.size() == static_cast<std::size_t>(n));
}

TEST_CASE("ids: a new connection never gets the id of a closed one",
          "[conformance][ids]") {
  ionet::options o = local_options();
  o.max_connections = 4;  // slots are reused many times over
  server s(o);
  REQUIRE(s.start().ok());

  const int rounds = scaled(60, 2);
  std::set<ionet::connection_id> seen;
  int served = 0;
  const auto deadline = steady::now() + wait_budget;
  ionet::framed_client held;  // one long-lived connection throughout
  REQUIRE(connect_client(held, s.port()).ok());
  REQUIRE(s.wait_connected(1));
  seen.insert(s.snapshot().connected.at(0));

  while (served < rounds && steady::now() < deadline) {
    ionet::framed_client c;
    const std::size_t before = s.snapshot().connected.size();
    if (!connect_client(c, s.port())) continue;
    if (!s.wait_connected(before + 1, 1000ms)) continue;  // refused: retry
    const auto id = s.snapshot().connected.at(before);
    INFO("round " << served << " id " << id);
    CHECK(seen.insert(id).second);  // never seen before
    CHECK_FALSE(
        echo_roundtrip(c, pattern(32, static_cast<std::uint64_t>(served))));
    if (served % 2) {
      c.close();
    } else {
      c.reset();
    }
    REQUIRE(s.wait_closed_id(id));
    ++served;
  }
  CHECK(served == rounds);
  // The held connection is still reachable by its id, and only by it.
  CHECK_FALSE(echo_roundtrip(held, pattern(10, 1)));

  // With four slots and 60 connections, slots were reused: the generation
  // is what keeps the ids apart.
  std::set<std::uint32_t> slots;
  for (auto id : seen) slots.insert(ionet::slot_of(id));
  CHECK(slots.size() <= 4);
  CHECK(seen.size() == static_cast<std::size_t>(rounds) + 1);
}
