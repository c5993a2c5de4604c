// max_connections: connections beyond the limit are accepted by the OS,
// reset at once and counted in stats().rejected; those within keep working.
#include "support.hpp"

using namespace ionet_test;

TEST_CASE(
    "max_connections: a client beyond the limit is closed at once and counted",
    "[conformance][max_connections]") {
  ionet::options o = local_options();
  o.max_connections = 4;
  server s(o);
  REQUIRE(s.start().ok());

  std::vector<ionet::framed_client> four(4);
  for (auto& c : four) REQUIRE(connect_client(c, s.port()).ok());
  REQUIRE(s.wait_connected(4));
  for (std::size_t k = 0; k < four.size(); ++k) {
    CHECK_FALSE(echo_roundtrip(four[k], pattern(100, k)));
  }

  // The fifth: the OS accepts it, then the engine resets it without a
  // connected event.
  const std::error_code end = refusal_of_new_client(s.port());
  INFO("the refused client saw " << end.message());
  CHECK(is_reset(end));
  CHECK(eventually([&] { return s.engine().stats().rejected == 1; }));

  // The four keep working, and nobody saw the fifth.
  for (std::size_t k = 0; k < four.size(); ++k) {
    CHECK_FALSE(echo_roundtrip(four[k], pattern(3000, 10 + k)));
  }
  record r = s.snapshot();
  CHECK(r.connected.size() == 4);
  CHECK(r.closed.empty());
  auto st = s.engine().stats();
  CHECK(st.connections_open == 4);
  CHECK(st.accepted == 4);
  CHECK(st.rejected == 1);

  // A freed slot takes a new client (once the old connection is fully gone:
  // retried for a while, since the slot is freed asynchronously).
  four[2].close();
  REQUIRE(s.wait_closed(1));
  ionet::framed_client replacement;
  bool served = false;
  const auto deadline = steady::now() + wait_budget;
  while (!served && steady::now() < deadline) {
    ionet::framed_client attempt;
    if (!connect_client(attempt, s.port())) continue;
    if (!echo_roundtrip(attempt, pattern(64, 99), 1000ms)) {
      served = true;
      replacement = std::move(attempt);
    } else {
      std::this_thread::sleep_for(10ms);
    }
  }
  CHECK(served);
  r = s.snapshot();
  CHECK(r.connected.size() == 5);
  CHECK(r.order_errors.empty());
  st = s.engine().stats();
  CHECK(st.connections_open == 4);
  CHECK(st.accepted == st.closed + st.connections_open);
}
