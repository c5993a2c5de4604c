// A port held by a running engine is refused to a second engine with
// errc::address_in_use, and the first engine is not disturbed.
#include "support.hpp"

using namespace ionet_test;

TEST_CASE("address: a second engine on a taken port gets address_in_use",
          "[conformance][address]") {
  server first;
  REQUIRE(first.start().ok());
  const std::uint16_t port = first.port();
  REQUIRE(port != 0);

  ionet::options o = local_options();
  o.port = port;
  auto second = ionet::make_engine(o);
  REQUIRE(second);
  const ionet::status s = second->start();
  INFO("second start: " << s.to_string());
  CHECK(s.code == ionet::errc::address_in_use);
  // The refused engine runs nothing.
  std::vector<ionet::event> batch(4);
  CHECK(second->poll(batch, 0ms) == 0);
  second.reset();

  // The first engine still owns the port and serves.
  ionet::framed_client c;
  REQUIRE(connect_client(c, port).ok());
  CHECK_FALSE(echo_roundtrip(c, pattern(777, 1)));
  CHECK(first.wait_connected(1));
}

TEST_CASE("address: a port freed by stop() can be bound again at once",
          "[conformance][address]") {
  std::uint16_t port = 0;
  {
    // The server closes the connection first, so any TIME_WAIT state is on
    // the server's side of the port: a restarted server must still bind.
    server first(local_options(), [](ionet::engine& e, const ionet::event& ev) {
      if (ev.type == ionet::event_type::message) {
        (void)e.send(ev.conn, ev.data);
        (void)e.close(ev.conn);
      }
    });
    REQUIRE(first.start().ok());
    port = first.port();
    ionet::framed_client c;
    REQUIRE(connect_client(c, port).ok());
    CHECK_FALSE(echo_roundtrip(c, pattern(16, 2)));
    CHECK(read_until_closed(c) == ionet::errc::peer_closed);
    CHECK(first.wait_closed(1));
    first.destroy();
  }
  ionet::options o = local_options();
  o.port = port;
  server again(o);
  const ionet::status s = again.start();
  INFO("restart on port " << port << ": " << s.to_string());
  REQUIRE(s.ok());
  CHECK(again.port() == port);
  ionet::framed_client c;
  REQUIRE(connect_client(c, port).ok());
  CHECK_FALSE(echo_roundtrip(c, pattern(16, 3)));
}
