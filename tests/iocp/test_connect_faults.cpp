// IOCP backend: outbound connections (engine::connect()) whose ConnectEx
// the system refuses or cannot route, under the simulated Winsock's
// connect faults. Hidden: each runs only under its ctest entry
// (tests/CMakeLists.txt), whose IONET_WINSIM_FAULTS names the faults.
#include <cstdlib>
#include <string>
#include <vector>

#include "support.hpp"

using namespace ionet_test;

namespace {

// Its own name: the unity build puts it beside test_accept_pool.cpp's.
void require_connect_fault(const std::string& fault) {
  const char* faults = std::getenv("IONET_WINSIM_FAULTS");
  REQUIRE(faults != nullptr);
  REQUIRE(std::string(faults).find(fault) != std::string::npos);
}

}  // namespace

TEST_CASE("iocp: connects refused or unroutable end with their reason",
          "[.][iocp][connect][winsim]") {
  // unreachable_connect fails the ConnectEx call at once (WSAENETUNREACH);
  // refuse_connect completes it through the port with WSAECONNREFUSED
  // (the port's status for it is STATUS_CONNECTION_REFUSED). Each must
  // close its connection, once, with its own reason, and the others open
  // and are served as usual.
  require_connect_fault("refuse_connect");
  require_connect_fault("unreachable_connect");
  server s;  // echoes
  REQUIRE(s.start().ok());
  ionet::options o = local_options();
  o.listen = false;
  server c(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(c.start().ok());

  constexpr int n = 40;
  std::vector<ionet::connection_id> ids;
  for (int i = 0; i < n; ++i) {
    const auto r = c.engine().connect("127.0.0.1", s.port());
    REQUIRE(r);
    ids.push_back(r.conn);
    // A connect that fails at once may have closed already.
    const std::error_code ec = c.engine().send(r.conn, pattern(32, i));
    CHECK((!ec || ec == ionet::errc::stale_connection));
  }
  // Each either opened or closed.
  REQUIRE(eventually([&] {
    const record r = c.snapshot();
    return r.connected.size() + r.closed.size() == ids.size();
  }));
  const std::size_t opened = c.snapshot().connected.size();
  // The ones that opened sent their message (queued before they opened).
  REQUIRE(eventually([&] { return s.snapshot().messages == opened; }));
  for (const auto id : c.snapshot().connected) {
    REQUIRE_FALSE(c.engine().close(id));
  }
  REQUIRE(c.wait_closed(ids.size()));

  const record cr = c.snapshot();
  CHECK(cr.order_errors.empty());
  CHECK(cr.closed.size() == ids.size());
  std::size_t refused = 0;
  std::size_t unreachable = 0;
  for (const auto id : ids) {
    INFO("id " << id);
    const closed_record* end = cr.closed_of(id);
    REQUIRE(end);
    if (end->opened) {
      CHECK(end->reason == ionet::errc::closed_by_user);
    } else if (end->reason == ionet::errc::connection_refused) {
      ++refused;
    } else {
      CHECK(end->reason == ionet::errc::host_unreachable);
      ++unreachable;
    }
  }
  CHECK(refused > 0);
  CHECK(unreachable > 0);
  CHECK(opened > 0);
  CHECK(refused + unreachable + opened == ids.size());
  const ionet::engine_stats st = c.engine().stats();
  CHECK(st.connects == ids.size());
  CHECK(st.connect_failures == refused + unreachable);
  CHECK(st.stale_completions == 0);
  CHECK(eventually([&] { return c.engine().stats().connections_open == 0; }));
  CHECK(eventually([&] { return s.engine().stats().accepted == opened; }));
}
