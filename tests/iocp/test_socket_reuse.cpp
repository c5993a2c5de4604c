// IOCP backend: which sockets go back to the accept pool. A socket is
// recycled with DisconnectEx(TF_REUSE_SOCKET) only after a passive close;
// after our own FIN went first, Windows keeps it in TIME_WAIT (120 s by
// default) before DisconnectEx completes, which would pin the pool entry.
// Wine does not model TIME_WAIT (and never reuses sockets here); the
// simulator (tests/winsim) and Windows do, so these fail there when an
// active close recycles its socket. That a passive close recycles it is
// checked by test_accept_pool.cpp's graceful churn.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace ionet_test;

namespace {

// More connections, one after another, than the pool has sockets
// (max_connections + accept_depth), each closed by the server first.
constexpr std::uint32_t churn_max_connections = 100;
constexpr std::uint32_t churn_accept_depth = 16;

int churn_count() { return (sanitized || slow_platform) ? 300 : 1000; }

}  // namespace

TEST_CASE(
    "iocp: server-initiated closes do not pin the accept pool in TIME_WAIT",
    "[iocp][reuse]") {
  ionet::options o = local_options();
  o.max_connections = churn_max_connections;
  o.accept_depth = churn_accept_depth;
  // Answer, then close from our side: our FIN goes first.
  server s(
      o,
      [](ionet::engine& eng, const ionet::event& ev) {
        if (ev.type != ionet::event_type::message) return;
        (void)eng.send(ev.conn, ev.data);
        (void)eng.close(ev.conn);
      },
      server::delivery::inline_handler);
  REQUIRE(s.start().ok());

  const int n = churn_count();
  REQUIRE(static_cast<std::uint32_t>(n) >
          2 * (o.max_connections + o.accept_depth));
  const auto msg = pattern(64, 7);
  int served = 0;
  std::string first_failure;
  for (int i = 0; i < n; ++i) {
    ionet::framed_client c;
    if (ionet::status st = connect_client(c, s.port()); !st) {
      first_failure = "connection " + std::to_string(i) + ": " + st.to_string();
      break;
    }
    // A starved pool shows here: the connection waits in the backlog with
    // no AcceptEx to take it, and its message is never read.
    if (auto ec = echo_roundtrip(c, msg)) {
      first_failure =
          "connection " + std::to_string(i) + " echo: " + ec.message();
      break;
    }
    const std::error_code end = read_until_closed(c);
    if (end != ionet::errc::peer_closed) {
      first_failure =
          "connection " + std::to_string(i) + " end: " + end.message();
      break;
    }
    ++served;
  }
  INFO(first_failure);
  CHECK(served == n);
  const auto st = s.engine().stats();
  INFO("sockets_created " << st.sockets_created << ", sockets_reused "
                          << st.sockets_reused);
  CHECK(st.accept_failures == 0);
  CHECK(st.sockets_reused == 0);  // every close here was ours first
}

TEST_CASE("iocp: clients beyond max_connections are reset and accepts go on",
          "[iocp][reuse]") {
  ionet::options o = local_options();
  o.max_connections = 2;
  o.accept_depth = 4;
  server s(o);
  REQUIRE(s.start().ok());
  ionet::status failed;
  auto held = connect_clients(s.port(), 2, failed);
  REQUIRE(failed.ok());
  REQUIRE(s.wait_connected(2));

  // Far more refusals than the pool has sockets: each must end at once
  // with a reset, not wait in the backlog behind pinned entries.
  const int n = (sanitized || slow_platform) ? 60 : 200;
  int refused = 0;
  std::string first_failure;
  for (int i = 0; i < n; ++i) {
    const std::error_code end = refusal_of_new_client(s.port());
    if (!is_reset(end)) {
      first_failure =
          "client " + std::to_string(i) + " ended with " + end.message();
      break;
    }
    ++refused;
  }
  INFO(first_failure);
  CHECK(refused == n);
  CHECK(eventually([&] {
    return s.engine().stats().rejected == static_cast<std::uint64_t>(n);
  }));
  // The held connections still work.
  for (auto& c : held) CHECK_FALSE(echo_roundtrip(c, pattern(16, 1)));
}
