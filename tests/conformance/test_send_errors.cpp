// send() errors: a closed connection's id is stale (and never reaches a
// newer connection), an oversized message is refused, and a peer that does
// not read makes send() answer queue_full without losing anything.
#include "support.hpp"

using namespace ionet_test;

TEST_CASE("send errors: a closed connection's id gives stale_connection",
          "[conformance][send_errors]") {
  server s(local_options(), [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());

  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  CHECK_FALSE(s.engine().send(*id, pattern(10, 1)));  // live: accepted

  c.close();
  REQUIRE(s.wait_closed_id(*id));
  const auto msg = pattern(10, 2);
  const std::uint64_t stale_before = s.engine().stats().send_stale;
  CHECK(s.engine().send(*id, msg) == ionet::errc::stale_connection);
  CHECK(s.engine().close(*id) == ionet::errc::stale_connection);
  CHECK(s.engine().set_context(*id, &c) == ionet::errc::stale_connection);
  CHECK(s.engine().stats().send_stale == stale_before + 1);

  // Ids that never named a connection are stale too.
  CHECK(s.engine().send(0, msg) == ionet::errc::stale_connection);
  CHECK(s.engine().send(ionet::make_connection_id(0xfffffff0u, 1), msg) ==
        ionet::errc::stale_connection);
  CHECK(s.engine().send(*id + (std::uint64_t{2} << 32), msg) ==
        ionet::errc::stale_connection);
}

TEST_CASE(
    "send errors: a stale id never reaches the connection that reuses its slot",
    "[conformance][send_errors]") {
  ionet::options o = local_options();
  o.max_connections = 1;  // the second connection must take the first's slot
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());

  ionet::framed_client first;
  std::string why;
  const auto old_id = connect_one(s, first, why);
  INFO(why);
  REQUIRE(old_id);
  first.close();
  REQUIRE(s.wait_closed_id(*old_id));

  // The slot is free once the closed event is released and the backend is
  // done with the socket; until then a new client may be refused, so try
  // again for a while.
  ionet::framed_client second;
  std::optional<ionet::connection_id> new_id;
  const auto deadline = steady::now() + wait_budget;
  while (!new_id && steady::now() < deadline) {
    ionet::framed_client attempt;
    const std::size_t before = s.snapshot().connected.size();
    if (!connect_client(attempt, s.port())) continue;
    if (s.wait_connected(before + 1, 500ms)) {
      new_id = s.snapshot().connected.at(before);
      second = std::move(attempt);
    } else {
      std::this_thread::sleep_for(10ms);
    }
  }
  REQUIRE(new_id);
  CHECK(*new_id != *old_id);
  CHECK(ionet::slot_of(*new_id) == ionet::slot_of(*old_id));

  const auto stale_msg = pattern(100, 3);
  const auto live_msg = pattern(100, 4);
  CHECK(s.engine().send(*old_id, stale_msg) == ionet::errc::stale_connection);
  CHECK(s.engine().close(*old_id) == ionet::errc::stale_connection);
  CHECK_FALSE(s.engine().send(*new_id, live_msg));
  std::vector<std::byte> got;
  REQUIRE_FALSE(second.read(got));
  CHECK(same_bytes(got, live_msg));
  CHECK(is_timeout(second.read(got, 100ms)));  // nothing else came
}

TEST_CASE(
    "send errors: a message above max_message_bytes gives message_too_large",
    "[conformance][send_errors]") {
  ionet::options o = local_options();
  o.max_message_bytes = 1024;
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);

  CHECK(s.engine().send(*id, pattern(1025, 1)) ==
        ionet::errc::message_too_large);
  CHECK(s.engine().send(*id, pattern(1u << 20, 1)) ==
        ionet::errc::message_too_large);
  // The connection is unharmed, and the limit itself is fine.
  const auto ok_msg = pattern(1024, 2);
  CHECK_FALSE(s.engine().send(*id, ok_msg));
  std::vector<std::byte> got;
  REQUIRE_FALSE(c.read(got));
  CHECK(same_bytes(got, ok_msg));
  CHECK(is_timeout(c.read(got, 100ms)));
}

TEST_CASE(
    "send errors: queue_full while the peer does not read, nothing dropped",
    "[conformance][send_errors]") {
  constexpr std::uint32_t msg_size = 16 * 1024;
  ionet::options o = local_options();
  o.max_message_bytes = msg_size;
  o.max_queued_bytes = 4 * (msg_size + 4);
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());

  ionet::framed_client lazy, other;
  std::string why;
  const auto lazy_id = connect_one(s, lazy, why);
  INFO(why);
  REQUIRE(lazy_id);
  const auto other_id = connect_one(s, other, why);
  REQUIRE(other_id);

  // Send until the engine pushes back. The socket buffers absorb a few MB
  // first; then at most max_queued_bytes wait in the engine.
  // queue_full may come while bytes are still moving into the socket; the
  // peer is surely stuck once it persists for a while.
  std::uint32_t accepted = 0;
  std::error_code refused;
  std::optional<steady::time_point> full_since;
  const auto deadline = steady::now() + wait_budget;
  while (steady::now() < deadline) {
    const std::error_code ec =
        s.engine().send(*lazy_id, pattern(msg_size, accepted));
    if (!ec) {
      ++accepted;
      full_since.reset();
      continue;
    }
    refused = ec;
    if (ec != ionet::errc::queue_full) break;
    if (!full_since) {
      full_since = steady::now();
    } else if (steady::now() - *full_since > 300ms) {
      break;
    }
    std::this_thread::sleep_for(2ms);
  }
  INFO("accepted " << accepted << " messages before the refusal");
  REQUIRE(refused == ionet::errc::queue_full);
  CHECK(accepted > 0);
  CHECK(s.engine().stats().send_queue_full >= 1);

  // The cap is per connection: the other one is unaffected.
  const auto other_msg = pattern(100, 99);
  CHECK_FALSE(s.engine().send(*other_id, other_msg));
  std::vector<std::byte> got;
  REQUIRE_FALSE(other.read(got));
  CHECK(same_bytes(got, other_msg));

  // Every accepted message arrives, intact and in order; nothing more.
  std::uint32_t read_ok = 0;
  for (; read_ok < accepted; ++read_ok) {
    if (lazy.read(got, wait_budget)) break;
    if (!same_bytes(got, pattern(msg_size, read_ok))) break;
  }
  CHECK(read_ok == accepted);

  // Drained: send() takes messages again.
  const auto after = pattern(msg_size, 12345);
  CHECK_FALSE(s.engine().send(*lazy_id, after));
  REQUIRE_FALSE(lazy.read(got));
  CHECK(same_bytes(got, after));
  CHECK(is_timeout(lazy.read(got, 100ms)));
  CHECK(s.engine().stats().bytes_dropped == 0);
}
