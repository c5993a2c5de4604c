// Half-close: a client sends, then shuts down its sending side. The engine
// still delivers what was sent, the echo of it reaches the client, and then
// the connection closes with reason peer_closed (the client sees EOF).
#include "support.hpp"

using namespace ionet_test;

namespace {

void run_half_close(server::delivery d) {
  server s(local_options(), {}, d);
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);

  const std::size_t count = 20;
  std::vector<std::vector<std::byte>> sent;
  for (std::size_t i = 0; i < count; ++i) {
    // Up to ~200 KB in total: more than one read's worth on the server.
    sent.push_back(pattern(i * 997 % 20000, 40 + i));
    REQUIRE_FALSE(c.write(sent.back()));
  }
  REQUIRE_FALSE(c.shutdown_send());

  for (std::size_t i = 0; i < count; ++i) {
    INFO("echo " << i);
    std::vector<std::byte> got;
    REQUIRE_FALSE(c.read(got, wait_budget));
    CHECK(same_bytes(got, sent[i]));
  }
  // Then the server closes its side too: EOF, not a reset and not silence.
  CHECK(read_until_closed(c) == ionet::errc::peer_closed);

  REQUIRE(s.wait_closed_id(*id));
  const record r = s.snapshot();
  CHECK(r.closed_of(*id)->reason == ionet::errc::peer_closed);
  CHECK(r.messages == static_cast<std::uint64_t>(count));
  CHECK(r.echo_failures == 0);
  CHECK(r.order_errors.empty());
  CHECK(s.engine().send(*id, pattern(1, 1)) == ionet::errc::stale_connection);
}

}  // namespace

TEST_CASE("half-close: echo of what was sent arrives, then peer_closed (pull)",
          "[conformance][half_close]") {
  run_half_close(server::delivery::pull);
}

TEST_CASE(
    "half-close: echo of what was sent arrives, then peer_closed (inline handler)",
    "[conformance][half_close]") {
  run_half_close(server::delivery::inline_handler);
}

TEST_CASE(
    "half-close: a client that shuts down without sending is closed with peer_closed",
    "[conformance][half_close]") {
  server s;
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  REQUIRE_FALSE(c.shutdown_send());
  REQUIRE(s.wait_closed_id(*id));
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::peer_closed);
  CHECK(read_until_closed(c) == ionet::errc::peer_closed);
}
