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
  for (auto id : seen) slots.insert(slot_in(id));
  CHECK(slots.size() <= 4);
  CHECK(seen.size() == static_cast<std::size_t>(rounds) + 1);
}

namespace {

// Polls (pull model) until an event of `type` comes, and returns it
// unreleased; every other event is released. Empty after the budget.
std::optional<ionet::event> next_of(ionet::engine& eng,
                                    ionet::event_type type) {
  const auto deadline = steady::now() + wait_budget;
  while (steady::now() < deadline) {
    ionet::event ev[1];
    if (eng.poll(ev, 20ms) == 0) continue;
    if (ev[0].type == type) return ev[0];
    eng.release(ev);
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE(
    "ids: an id from before stop() never names a connection of the next "
    "start, and a closed event held over the restart keeps its slot",
    "[conformance][ids]") {
  ionet::options o = local_options();
  o.max_connections = 2;
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());
  ionet::framed_client a;
  REQUIRE(connect_client(a, eng->port()).ok());
  const auto a_up = next_of(*eng, ionet::event_type::connected);
  REQUIRE(a_up);
  const ionet::connection_id id_a = a_up->conn;
  eng->release(std::span(&*a_up, 1));
  eng->stop();
  // A's closed event (engine_stopped) is taken and held over the restart.
  const auto a_closed = next_of(*eng, ionet::event_type::closed);
  REQUIRE(a_closed);
  CHECK(a_closed->conn == id_a);

  REQUIRE(eng->start().ok());
  ionet::framed_client b;
  REQUIRE(connect_client(b, eng->port()).ok());
  const auto b_up = next_of(*eng, ionet::event_type::connected);
  REQUIRE(b_up);
  const ionet::connection_id id_b = b_up->conn;
  eng->release(std::span(&*b_up, 1));
  CHECK(id_b != id_a);
  CHECK(eng->send(id_a, pattern(8, 1)) == ionet::errc::stale_connection);
  // A's slot is free again only now; B's slot stays B's.
  eng->release(std::span(&*a_closed, 1));
  CHECK_FALSE(eng->send(id_b, pattern(8, 2)));
  std::vector<std::byte> got;
  REQUIRE_FALSE(b.read(got));
  CHECK(same_bytes(got, pattern(8, 2)));

  // B goes; its closed event is held, so its slot is not reused: of two
  // new clients one is served (A's old slot) and one refused.
  b.close();
  const auto b_closed = next_of(*eng, ionet::event_type::closed);
  REQUIRE(b_closed);
  CHECK(b_closed->conn == id_b);
  // The refused one may see its connect fail (reset by the refusal).
  ionet::framed_client c;
  ionet::framed_client d;
  (void)connect_client(c, eng->port());
  (void)connect_client(d, eng->port());
  REQUIRE(eventually([&] {
    const auto st = eng->stats();
    return st.accepted + st.rejected == 3;
  }));
  CHECK(eng->stats().rejected == 1);
  eng->release(std::span(&*b_closed, 1));
  eng->stop();
}
