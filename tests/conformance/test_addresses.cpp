// peer_address() and local_address() answer for a live connection from any
// thread, agree with the connected event and the listening socket, and
// answer nullopt once the id is stale.
#include "support.hpp"

using namespace ionet_test;

namespace {

std::string text_of(const std::optional<ionet::endpoint>& e) {
  return e ? e->to_string() : std::string("nullopt");
}

}  // namespace

TEST_CASE("addresses: a connection's two ends, while it lives",
          "[conformance][addresses]") {
  // A wildcard listener: the local address is the one the client dialled.
  ionet::options o = local_options();
  o.host = "0.0.0.0";
  std::mutex lock;
  std::string peer_seen;  // from the connected event
  server s(o, [&](ionet::engine&, const ionet::event& ev) {
    if (ev.type != ionet::event_type::connected) return;
    std::lock_guard g(lock);
    peer_seen = ev.peer.to_string();
  });
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);

  const auto peer = s.engine().peer_address(*id);
  const auto local = s.engine().local_address(*id);
  INFO("peer " << text_of(peer) << ", local " << text_of(local));
  REQUIRE(peer);
  REQUIRE(local);
  {
    std::lock_guard g(lock);
    CHECK(peer->to_string() == peer_seen);
  }
  CHECK_FALSE(peer->v6);
  CHECK(peer->to_string().rfind("127.0.0.1:", 0) == 0);
  CHECK(peer->port != 0);
  CHECK(peer->port != s.port());
  CHECK(local->to_string() == "127.0.0.1:" + std::to_string(s.port()));

  // Asked from another thread while the connection closes: an answer or
  // nullopt, never another connection's.
  std::atomic<bool> done{false};
  std::atomic<int> wrong{0};
  std::thread asker([&] {
    const std::string want = peer->to_string();
    for (int i = 0; i < 100000 && !done.load(); ++i) {
      const auto p = s.engine().peer_address(*id);
      if (p && p->to_string() != want) wrong.fetch_add(1);
      if (!s.engine().local_address(*id)) break;  // gone
    }
  });
  c.close();
  REQUIRE(s.wait_closed_id(*id));
  done.store(true);
  asker.join();
  CHECK(wrong.load() == 0);
  CHECK_FALSE(s.engine().peer_address(*id));
  CHECK_FALSE(s.engine().local_address(*id));
  CHECK_FALSE(s.engine().peer_address(ionet::connection_id{}));
  CHECK_FALSE(s.engine().local_address(made_id(7, 3)));
}
