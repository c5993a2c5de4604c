// stats(): the counters add up once clients have come and gone and every
// event has been drained.
#include "support.hpp"

using namespace ionet_test;

TEST_CASE("stats: counters add up after clients disconnect",
          "[conformance][stats]") {
  server s;
  REQUIRE(s.start().ok());
  {
    const ionet::engine_stats st = s.engine().stats();
    CHECK(st.accepted == 0);
    CHECK(st.connections_open == 0);
    CHECK(st.pool_slices_total > 0);
    CHECK(st.pool_slices_in_use == 0);
  }

  const int nclients = 10;
  const int per_client = 5;
  std::vector<ionet::framed_client> clients(nclients);
  for (auto& c : clients) REQUIRE(connect_client(c, s.port()).ok());
  REQUIRE(s.wait_connected(nclients));
  {
    const ionet::engine_stats st = s.engine().stats();
    CHECK(st.accepted == static_cast<std::uint64_t>(nclients));
    CHECK(st.connections_open == static_cast<std::uint64_t>(nclients));
    CHECK(st.closed == 0);
  }

  std::uint64_t payload = 0;
  for (int k = 0; k < nclients; ++k) {
    for (int i = 0; i < per_client; ++i) {
      const auto msg = pattern(static_cast<std::size_t>(k * 100 + i * 7),
                               static_cast<std::uint64_t>(k * 10 + i));
      REQUIRE_FALSE(echo_roundtrip(clients[static_cast<std::size_t>(k)], msg));
      payload += msg.size();
    }
  }
  for (auto& c : clients) c.close();
  REQUIRE(s.wait_closed(nclients));

  const std::uint64_t n_msgs =
      static_cast<std::uint64_t>(nclients) * per_client;
  const std::uint64_t wire = payload + 4 * n_msgs;
  // Counted on engine threads; give them a moment to settle.
  const bool settled = eventually([&] {
    const auto st = s.engine().stats();
    return st.connections_open == 0 && st.bytes_sent == wire &&
           st.pool_slices_in_use == 0 && st.events_pending == 0;
  });
  const ionet::engine_stats st = s.engine().stats();
  CHECK(settled);
  CHECK(st.accepted == static_cast<std::uint64_t>(nclients));
  CHECK(st.closed == static_cast<std::uint64_t>(nclients));
  CHECK(st.accepted == st.closed + st.connections_open);
  CHECK(st.connections_open == 0);
  CHECK(st.rejected == 0);
  CHECK(st.messages_received == n_msgs);
  CHECK(st.bytes_received == wire);
  CHECK(st.messages_sent == n_msgs);
  CHECK(st.bytes_queued == wire);
  CHECK(st.bytes_sent == wire);
  CHECK(st.bytes_dropped == 0);
  CHECK(st.send_stale == 0);
  CHECK(st.send_queue_full == 0);
  CHECK(st.frames_too_large == 0);
  CHECK(st.pool_slices_in_use == 0);
  CHECK(st.pool_slices_total > 0);
  CHECK(st.events_pending == 0);
}

TEST_CASE(
    "stats: accepted == closed + connections_open while clients come and go",
    "[conformance][stats]") {
  server s;
  REQUIRE(s.start().ok());
  std::vector<ionet::framed_client> clients(6);
  for (auto& c : clients) REQUIRE(connect_client(c, s.port()).ok());
  REQUIRE(s.wait_connected(6));
  clients[1].close();
  clients[4].reset();
  REQUIRE(s.wait_closed(2));
  auto st = s.engine().stats();
  CHECK(st.accepted == 6);
  CHECK(st.closed == 2);
  CHECK(st.connections_open == 4);
  CHECK(st.accepted == st.closed + st.connections_open);
  for (auto& c : clients) c.close();
  REQUIRE(s.wait_closed(6));
  st = s.engine().stats();
  CHECK(st.accepted == 6);
  CHECK(st.closed == 6);
  CHECK(st.connections_open == 0);
}

TEST_CASE("stats: threads is the number of engine threads asked for",
          "[conformance][stats]") {
  for (std::uint32_t n : {1u, 2u, 3u}) {
    ionet::options o = local_options();
    o.threads = n;
    auto eng = ionet::make_engine(o);
    REQUIRE(eng->start().ok());
    CHECK(eng->stats().threads == n);
    eng->stop();
  }
  // The backend's own choice (libuv, io_uring: 1; IOCP: 2 per CPU) is a
  // number too, never the backend_default marker.
  auto eng = ionet::make_engine(local_options());
  REQUIRE(eng->start().ok());
  const std::uint64_t threads = eng->stats().threads;
  CHECK(threads >= 1);
  CHECK(threads <= 512);
}

TEST_CASE("stats: an engine started again after stop() counts from zero",
          "[conformance][stats]") {
  ionet::options o = local_options();
  o.handler = [](ionet::engine& eng, const ionet::event& ev) {
    if (ev.type == ionet::event_type::message) (void)eng.send(ev.conn, ev.data);
  };
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());
  {
    std::vector<ionet::framed_client> clients(3);
    for (auto& c : clients) REQUIRE(connect_client(c, eng->port()).ok());
    for (auto& c : clients) REQUIRE_FALSE(echo_roundtrip(c, pattern(700, 1)));
    clients[0].close();
    REQUIRE(eventually([&] { return eng->stats().closed == 1; }));
    CHECK(eng->send(made_id(0, 2), pattern(10, 2)));  // stale
    const auto st = eng->stats();
    REQUIRE(st.accepted == 3);
    REQUIRE(st.messages_received == 3);
    REQUIRE(st.send_stale == 1);
    eng->stop();  // the other two are closed by stop()
  }
  REQUIRE(eng->start().ok());
  const auto st = eng->stats();
  CHECK(st.connections_open == 0);
  CHECK(st.accepted == 0);
  CHECK(st.closed == 0);
  CHECK(st.rejected == 0);
  CHECK(st.bytes_received == 0);
  CHECK(st.bytes_sent == 0);
  CHECK(st.messages_received == 0);
  CHECK(st.messages_sent == 0);
  CHECK(st.bytes_queued == 0);
  CHECK(st.bytes_dropped == 0);
  CHECK(st.send_stale == 0);
  CHECK(st.send_queue_full == 0);
  CHECK(st.read_pauses == 0);
  CHECK(st.frames_too_large == 0);
  CHECK(st.pool_slices_in_use == 0);
  CHECK(st.events_pending == 0);
  CHECK(st.accept_failures == 0);
  CHECK(st.stale_completions == 0);
  // And it works: one more client echoes, counted from zero.
  ionet::framed_client c;
  REQUIRE(connect_client(c, eng->port()).ok());
  REQUIRE_FALSE(echo_roundtrip(c, pattern(100, 3)));
  CHECK(eventually([&] { return eng->stats().messages_sent == 1; }));
  CHECK(eng->stats().accepted == 1);
}

TEST_CASE("stats: read from another thread while the engine starts and stops",
          "[conformance][stats]") {
  // stats() is for monitoring from any thread: it must not read what a
  // stop() is freeing (io_uring's loops were, under TSan).
  auto eng = ionet::make_engine(local_options());
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> reads{0};
  std::thread reader([&] {
    while (!done.load()) {
      const ionet::engine_stats st = eng->stats();
      if (st.connections_open == 0) reads.fetch_add(1);
    }
  });
  for (int i = 0; i < scaled(40); ++i) {
    REQUIRE(eng->start().ok());
    ionet::framed_client c;
    REQUIRE(connect_client(c, eng->port()).ok());
    eng->stop();
  }
  done.store(true);
  reader.join();
  CHECK(reads.load() > 0);
}
