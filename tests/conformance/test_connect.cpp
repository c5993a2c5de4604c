// Outbound connections (engine::connect()): an ionet engine that does not
// listen connects to one that does, and they echo; connects that cannot
// open end with a closed event that says why (refused, unreachable, timed
// out), and every id connect() gave gets exactly one closed event, also
// when the engine stops meanwhile.
#include <set>

#include "support.hpp"

using namespace ionet_test;

namespace {

ionet::options outbound_options() {
  ionet::options o = local_options();
  o.listen = false;
  return o;
}

// A client engine does not echo (the server it talks to does: the two
// would bounce every message between them until one closed).
void quiet(ionet::engine&, const ionet::event&) {}

// What a client engine's callback saw: the connected event's peer and
// context, and each message's bytes in order.
struct outbound_log {
  std::mutex lock;
  std::vector<ionet::endpoint> peers;
  std::vector<void*> contexts;
  std::vector<std::vector<std::byte>> messages;

  server::callback callback() {
    return [this](ionet::engine&, const ionet::event& e) {
      std::lock_guard g(lock);
      if (e.type == ionet::event_type::connected) {
        peers.push_back(e.peer);
        contexts.push_back(e.context());
      } else if (e.type == ionet::event_type::message) {
        messages.emplace_back(e.data.begin(), e.data.end());
      }
    };
  }
  std::size_t message_count() {
    std::lock_guard g(lock);
    return messages.size();
  }
};

void run_connect_echo(server::delivery d) {
  server s;  // echoes
  REQUIRE(s.start().ok());
  outbound_log log;
  server c(outbound_options(), log.callback(), d);
  REQUIRE(c.start().ok());
  CHECK(c.port() == 0);  // it does not listen

  int context = 0;
  ionet::connect_options how;
  how.context = &context;
  const ionet::connect_result r =
      c.engine().connect("127.0.0.1", s.port(), how);
  REQUIRE(r);
  // Sent before it opened: queued, and out once it has.
  constexpr std::size_t early = 5, late = 5;
  std::vector<std::vector<std::byte>> sent;
  for (std::size_t i = 0; i < early; ++i) {
    sent.push_back(pattern(100 + i * 3000, 500 + i));
    REQUIRE_FALSE(c.engine().send(r.conn, sent.back()));
  }
  REQUIRE(c.wait_connected(1));
  CHECK(c.snapshot().connected.at(0) == r.conn);
  for (std::size_t i = 0; i < late; ++i) {
    sent.push_back(pattern(7 + i * 5000, 600 + i));
    REQUIRE_FALSE(c.engine().send(r.conn, sent.back()));
  }
  REQUIRE(eventually([&] { return log.message_count() == early + late; }));
  {
    std::lock_guard g(log.lock);
    REQUIRE(log.peers.size() == 1);
    CHECK(log.peers[0].to_string() == "127.0.0.1:" + std::to_string(s.port()));
    CHECK(log.contexts[0] == &context);
    for (std::size_t i = 0; i < sent.size(); ++i) {
      INFO("message " << i);
      CHECK(same_bytes(log.messages[i], sent[i]));
    }
  }
  const auto peer = c.engine().peer_address(r.conn);
  REQUIRE(peer);
  CHECK(peer->port == s.port());
  const auto local = c.engine().local_address(r.conn);
  REQUIRE(local);
  CHECK(local->port != 0);

  REQUIRE_FALSE(c.engine().close(r.conn));
  REQUIRE(c.wait_closed_id(r.conn));
  REQUIRE(s.wait_closed(1));
  const record cr = c.snapshot();
  CHECK(cr.closed_of(r.conn)->reason == ionet::errc::closed_by_user);
  CHECK(cr.closed_of(r.conn)->context == &context);
  CHECK(cr.order_errors.empty());
  const record sr = s.snapshot();
  CHECK(sr.closed.at(0).reason == ionet::errc::peer_closed);
  CHECK(sr.messages == early + late);
  CHECK(sr.echo_failures == 0);

  const ionet::engine_stats st = c.engine().stats();
  CHECK(st.connects == 1);
  CHECK(st.connect_failures == 0);
  CHECK(st.accepted == 0);
  CHECK(eventually([&] { return c.engine().stats().connections_open == 0; }));
  CHECK(s.engine().stats().accepted == 1);
}

// Waits for `id`'s closed event on `c` and returns its record.
closed_record closed_of(server& c, ionet::connection_id id) {
  REQUIRE(c.wait_closed_id(id));
  return *c.snapshot().closed_of(id);
}

}  // namespace

TEST_CASE("connect: an outbound connection echoes with an ionet server (pull)",
          "[conformance][connect]") {
  run_connect_echo(server::delivery::pull);
}

TEST_CASE(
    "connect: an outbound connection echoes with an ionet server (inline handler)",
    "[conformance][connect]") {
  run_connect_echo(server::delivery::inline_handler);
}

TEST_CASE("connect: nothing listening ends it with connection_refused",
          "[conformance][connect]") {
  std::uint16_t port = 0;
  {
    server gone;  // a port that was just free, now free again
    REQUIRE(gone.start().ok());
    port = gone.port();
  }
  server c(outbound_options(), quiet);
  REQUIRE(c.start().ok());
  int context = 0;
  ionet::connect_options how;
  how.context = &context;
  const auto r = c.engine().connect("127.0.0.1", port, how);
  REQUIRE(r);
  const closed_record end = closed_of(c, r.conn);
  CHECK(end.reason == ionet::errc::connection_refused);
  CHECK_FALSE(end.opened);
  CHECK(end.context == &context);  // handed back on the closed event
  CHECK(c.snapshot().connected.empty());
  const ionet::engine_stats st = c.engine().stats();
  CHECK(st.connects == 1);
  CHECK(st.connect_failures == 1);
  CHECK(eventually([&] { return c.engine().stats().connections_open == 0; }));
}

TEST_CASE("connect: an unroutable address ends it with host_unreachable",
          "[conformance][connect]") {
  server c(outbound_options(), quiet);
  REQUIRE(c.start().ok());
  // The limited broadcast address: no TCP connection can go there, and
  // the system says so without sending anything.
  const auto r = c.engine().connect("255.255.255.255", 9);
  REQUIRE(r);
  CHECK(closed_of(c, r.conn).reason == ionet::errc::host_unreachable);
}

TEST_CASE("connect: a peer that never answers ends it with connect_timeout",
          "[conformance][connect]") {
  black_hole hole;
  INFO(hole.error());
  REQUIRE(hole.error().empty());
  server c(outbound_options(), quiet);
  REQUIRE(c.start().ok());
  ionet::connect_options how;
  how.timeout = 300ms;
  const auto began = steady::now();
  const auto r = c.engine().connect("127.0.0.1", hole.port(), how);
  REQUIRE(r);
  REQUIRE_FALSE(c.engine().send(r.conn, pattern(1000, 1)));  // queued
  const closed_record end = closed_of(c, r.conn);
  CHECK(end.reason == ionet::errc::connect_timeout);
  CHECK_FALSE(end.opened);
  // Never early (the deadline is checked a few times a second: late by
  // up to one check).
  CHECK(steady::now() - began >= 295ms);
  const ionet::engine_stats st = c.engine().stats();
  CHECK(st.connect_failures == 1);
  CHECK(st.bytes_dropped == 1004);  // the queued frame never went
}

TEST_CASE("connect: close(reset) ends a connect under way at once",
          "[conformance][connect]") {
  black_hole hole;
  INFO(hole.error());
  REQUIRE(hole.error().empty());
  server c(outbound_options(), quiet);
  REQUIRE(c.start().ok());
  const auto r = c.engine().connect("127.0.0.1", hole.port());
  REQUIRE(r);
  REQUIRE_FALSE(c.engine().close(r.conn, ionet::close_mode::reset));
  const closed_record end = closed_of(c, r.conn);
  CHECK(end.reason == ionet::errc::closed_by_user);
  CHECK_FALSE(end.opened);
  CHECK(c.engine().close(r.conn) == ionet::errc::stale_connection);
}

TEST_CASE(
    "connect: a graceful close before it opens still sends what was queued",
    "[conformance][connect]") {
  server s;
  REQUIRE(s.start().ok());
  server c(outbound_options(), quiet);
  REQUIRE(c.start().ok());
  const auto r = c.engine().connect("127.0.0.1", s.port());
  REQUIRE(r);
  for (int i = 0; i < 3; ++i)
    REQUIRE_FALSE(c.engine().send(r.conn, pattern(64, i)));
  REQUIRE_FALSE(c.engine().close(r.conn));
  CHECK(closed_of(c, r.conn).reason == ionet::errc::closed_by_user);
  REQUIRE(s.wait_closed(1));
  const record sr = s.snapshot();
  CHECK(sr.messages == 3);
  CHECK(sr.closed.at(0).reason == ionet::errc::peer_closed);
}

TEST_CASE("connect: bad addresses, a full engine and a stopped one are refused",
          "[conformance][connect]") {
  ionet::options o = outbound_options();
  o.max_connections = 1;
  auto eng = ionet::make_engine(o);
  CHECK(eng->connect("127.0.0.1", 9).error == ionet::errc::not_running);
  REQUIRE(eng->start().ok());
  for (const char* bad : {"localhost", "", "1.2.3", "1.2.3.4.5", "::g"}) {
    INFO(bad);
    CHECK(eng->connect(bad, 9).error == ionet::errc::bad_address);
  }
  CHECK(eng->connect("127.0.0.1", 0).error == ionet::errc::bad_address);
  ionet::connect_options how;
  how.timeout = -1ms;
  CHECK(eng->connect("127.0.0.1", 9, how).error == ionet::errc::bad_option);

  black_hole hole;
  INFO(hole.error());
  REQUIRE(hole.error().empty());
  const auto first = eng->connect("127.0.0.1", hole.port());
  REQUIRE(first);
  const auto second = eng->connect("127.0.0.1", hole.port());
  CHECK(second.error == ionet::errc::connection_limit);
  CHECK(second.conn == ionet::connection_id{});
  eng->stop();
  CHECK(eng->connect("127.0.0.1", hole.port()).error ==
        ionet::errc::not_running);
}

TEST_CASE("connect: every connect under way at stop() gets its closed event",
          "[conformance][connect]") {
  black_hole hole;
  INFO(hole.error());
  REQUIRE(hole.error().empty());
  server s;
  REQUIRE(s.start().ok());
  for (const auto d :
       {server::delivery::pull, server::delivery::inline_handler}) {
    server c(outbound_options(), quiet, d);
    REQUIRE(c.start().ok());
    std::vector<ionet::connection_id> ids;
    for (int i = 0; i < 40; ++i) {
      // Half never open, half open (or are opening) when stop() comes.
      const auto r =
          c.engine().connect("127.0.0.1", i % 2 ? hole.port() : s.port());
      REQUIRE(r);
      ids.push_back(r.conn);
      REQUIRE_FALSE(c.engine().send(r.conn, pattern(32, i)));
    }
    c.stop();
    const record cr = c.snapshot();
    CHECK(cr.order_errors.empty());
    CHECK(cr.closed.size() == ids.size());
    for (const auto id : ids) {
      INFO("id " << id);
      const closed_record* end = cr.closed_of(id);
      REQUIRE(end);
      CHECK(end->reason == ionet::errc::engine_stopped);
    }
  }
}

TEST_CASE("connect: shutdown() ends a connect that does not open in time",
          "[conformance][connect]") {
  black_hole hole;
  INFO(hole.error());
  REQUIRE(hole.error().empty());
  server c(outbound_options(), quiet);
  REQUIRE(c.start().ok());
  const auto r = c.engine().connect("127.0.0.1", hole.port());
  REQUIRE(r);
  c.engine().shutdown(200ms);
  CHECK(c.engine().connect("127.0.0.1", hole.port()).error ==
        ionet::errc::not_running);
  c.stop();
  const record cr = c.snapshot();
  REQUIRE(cr.closed_of(r.conn));
  CHECK(cr.closed_of(r.conn)->reason == ionet::errc::engine_stopped);
}

TEST_CASE(
    "connect: from an inline handler, a connect that fails at once is closed",
    "[conformance][connect]") {
  // The handler connects while the engine delivers its batch to it. A
  // connect the system refuses on the spot (no route) must still reach
  // the handler as a closed event, not be lost with the batch.
  std::mutex lock;
  std::vector<ionet::connection_id> made;
  std::vector<std::pair<ionet::connection_id, std::error_code>> ended;
  ionet::options o = local_options();
  o.handler = [&](ionet::engine& eng, const ionet::event& e) {
    if (e.type == ionet::event_type::connected && !e.context()) {
      static int outbound_mark = 0;
      ionet::connect_options how;
      how.context = &outbound_mark;
      for (int i = 0; i < 20; ++i) {
        const auto r = eng.connect("255.255.255.255", 9, how);
        std::lock_guard g(lock);
        if (r) made.push_back(r.conn);
      }
    } else if (e.type == ionet::event_type::closed && e.context()) {
      std::lock_guard g(lock);
      ended.emplace_back(e.conn, e.reason);
    }
  };
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, eng->port()).ok());
  const bool all = eventually([&] {
    std::lock_guard g(lock);
    return made.size() == 20 && ended.size() == 20;
  });
  eng->stop();
  std::lock_guard g(lock);
  CHECK(made.size() == 20);
  REQUIRE(all);
  for (const auto& [id, reason] : ended) {
    INFO("id " << id);
    CHECK(std::find(made.begin(), made.end(), id) != made.end());
    CHECK(reason == ionet::errc::host_unreachable);
  }
}

TEST_CASE("connect: beside puts the connection on the thread of another",
          "[conformance][connect]") {
  // libuv and io_uring serve each connection on one loop thread: a
  // connection opened beside another is served by that one's thread, so
  // their handlers never run at once. IOCP's workers all serve every
  // connection: there it only has to connect. A `beside` that names no
  // open connection is ignored.
  server s;  // echoes
  REQUIRE(s.start().ok());
  std::mutex lock;
  std::map<ionet::connection_id, std::set<std::thread::id>> threads_of;
  ionet::options o = outbound_options();
  o.threads = 2;
  o.handler = [&](ionet::engine&, const ionet::event& e) {
    std::lock_guard g(lock);
    threads_of[e.conn].insert(std::this_thread::get_id());
  };
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());
  const bool bound = std::string(eng->backend_name()) != "iocp";
  auto opened = [&](ionet::connection_id id) {
    return eventually([&] {
      std::lock_guard g(lock);
      return threads_of.count(id) != 0;
    });
  };
  auto thread_of = [&](ionet::connection_id id) {
    std::lock_guard g(lock);
    return *threads_of.at(id).begin();
  };

  // Two on each thread (the first in turn), then three beside each of them.
  std::vector<ionet::connection_id> anchors;
  for (int i = 0; i < 4; ++i) {
    const auto r = eng->connect("127.0.0.1", s.port());
    REQUIRE(r);
    REQUIRE(opened(r.conn));
    anchors.push_back(r.conn);
  }
  std::vector<std::pair<ionet::connection_id, ionet::connection_id>> pairs;
  for (const auto anchor : anchors) {
    for (int i = 0; i < 3; ++i) {
      ionet::connect_options how;
      how.beside = anchor;
      const auto r = eng->connect("127.0.0.1", s.port(), how);
      REQUIRE(r);
      pairs.emplace_back(r.conn, anchor);
    }
  }
  for (const auto& [id, anchor] : pairs) {
    INFO("connection " << ionet::value_of(id) << " beside "
                       << ionet::value_of(anchor));
    REQUIRE(opened(id));
    REQUIRE_FALSE(eng->send(id, pattern(32, 1)));  // it works as any does
    if (bound) CHECK(thread_of(id) == thread_of(anchor));
  }
  REQUIRE(s.wait_until([&](const record& r) { return r.messages == 12; }));

  // Near a connection that has closed, or none at all: it still opens.
  REQUIRE_FALSE(eng->close(anchors[0], ionet::close_mode::reset));
  REQUIRE(s.wait_closed(1));
  for (const auto other : {anchors[0], ionet::connection_id{}}) {
    ionet::connect_options how;
    how.beside = other;
    const auto r = eng->connect("127.0.0.1", s.port(), how);
    REQUIRE(r);
    CHECK(opened(r.conn));
  }
  eng->stop();
}

TEST_CASE("connect: a close that races the connect's start ends it once",
          "[conformance][connect]") {
  // close() right after connect(), from the connecting thread or another:
  // the close may reach the engine thread before the connect has begun
  // there. Each id still gets exactly one closed event; a reset ends it
  // unopened or just opened, a graceful close after its queue went out.
  server s;
  REQUIRE(s.start().ok());
  ionet::options o = outbound_options();
  o.threads = 2;
  server c(o, quiet);
  REQUIRE(c.start().ok());
  constexpr std::uint64_t count = 200;
  std::vector<ionet::connection_id> ids;
  std::uint64_t graceful = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto r = c.engine().connect("127.0.0.1", s.port());
    REQUIRE(r);
    ids.push_back(r.conn);
    const auto mode =
        i % 2 ? ionet::close_mode::reset : ionet::close_mode::graceful;
    if (mode == ionet::close_mode::graceful) {
      REQUIRE_FALSE(c.engine().send(r.conn, pattern(64, i)));
      ++graceful;
    }
    if (i % 4 < 2) {
      REQUIRE_FALSE(c.engine().close(r.conn, mode));
    } else {
      std::error_code ec;
      std::thread other([&] { ec = c.engine().close(r.conn, mode); });
      other.join();
      REQUIRE_FALSE(ec);
    }
  }
  REQUIRE(c.wait_closed(count));
  const record cr = c.snapshot();
  CHECK(cr.order_errors.empty());
  CHECK(cr.closed.size() == ids.size());
  for (const auto id : ids) {
    INFO("id " << id);
    const closed_record* end = cr.closed_of(id);
    REQUIRE(end);
    CHECK(end->reason == ionet::errc::closed_by_user);
  }
  // Every graceful one sent its message before its FIN (once: the
  // client does not echo the server's echo).
  CHECK(eventually([&] { return s.snapshot().messages == graceful; }));
  CHECK(eventually([&] { return c.engine().stats().connections_open == 0; }));
  const ionet::engine_stats st = c.engine().stats();
  CHECK(st.connects == count);
  CHECK(st.connect_failures <= count - graceful);
}
