// reuse_port: engines that set it share one port (SO_REUSEPORT) and the
// kernel spreads connections among them; one that does not set it still
// finds the port in use. IOCP has no such sharing and refuses the option.
#include <set>
#include <string>

#include "support.hpp"

using namespace ionet_test;

TEST_CASE("reuse_port: two engines share a port and both serve",
          "[conformance][reuse_port]") {
  ionet::options o = local_options();
  o.reuse_port = true;
  server a(o);
  const ionet::status sa = a.start();
  if (std::string(a.engine().backend_name()) == "iocp") {
    CHECK(sa.code == ionet::errc::bad_option);
    CHECK(sa.message.find("reuse_port") != std::string::npos);
    return;
  }
  REQUIRE(sa.ok());
  o.port = a.port();
  server b(o);
  REQUIRE(b.start().ok());
  CHECK(b.port() == a.port());

  // Without the option the port is taken, as ever.
  ionet::options plain = local_options();
  plain.port = a.port();
  auto third = ionet::make_engine(plain);
  CHECK(third->start().code == ionet::errc::address_in_use);

  // Connections land on both (the kernel hashes each connection's
  // addresses and ports; 64 connections miss one engine with odds ~2^-63).
  std::vector<ionet::framed_client> clients(64);
  int bad = 0;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    if (!connect_client(clients[i], a.port()) ||
        echo_roundtrip(clients[i], pattern(100, i))) {
      ++bad;
    }
  }
  CHECK(bad == 0);
  const auto na = a.engine().stats().accepted;
  const auto nb = b.engine().stats().accepted;
  CHECK(na + nb == clients.size());
  CHECK(na > 0);
  CHECK(nb > 0);
}
