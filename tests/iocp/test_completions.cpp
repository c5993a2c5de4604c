// IOCP backend: completions that arrive for a connection already gone, and
// stop() while operations are in flight.
#include <atomic>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace ionet_test;

TEST_CASE(
    "iocp: a hand-off that arrives after its connection closed is dropped",
    "[iocp][completions]") {
  // The inline handler answers the first message, which posts a hand-off to
  // the port; the same read also holds a header announcing 4 GiB, so the
  // connection closes (message_too_large) before any worker takes the
  // hand-off. It must be counted as stale and touch nothing.
  ionet::options o = local_options();
  o.max_message_bytes = 1024;
  o.max_queued_bytes = 4096;
  std::atomic<int> sent{0};
  server s(
      o,
      [&](ionet::engine& eng, const ionet::event& ev) {
        if (ev.type == ionet::event_type::message &&
            !eng.send(ev.conn, ev.data)) {
          sent.fetch_add(1);
        }
      },
      server::delivery::inline_handler);
  REQUIRE(s.start().ok());
  ionet::framed_client other;
  std::string why;
  const auto other_id = connect_one(s, other, why);
  REQUIRE(other_id);

  const int rounds = 5;
  for (int i = 0; i < rounds; ++i) {
    ionet::framed_client c;
    const auto id = connect_one(s, c, why);
    INFO(why);
    REQUIRE(id);
    auto bytes = frame(pattern(10, static_cast<std::uint64_t>(i)));
    const std::byte huge[4] = {std::byte{0xff}, std::byte{0xff},
                               std::byte{0xff}, std::byte{0xff}};
    bytes.insert(bytes.end(), std::begin(huge), std::end(huge));
    REQUIRE_FALSE(c.write_raw(bytes));  // one segment: one read on the server
    REQUIRE(s.wait_closed_id(*id));
    CHECK(s.snapshot().closed_of(*id)->reason ==
          ionet::errc::message_too_large);
  }
  CHECK(sent.load() == rounds);
  REQUIRE(eventually(
      [&] { return s.engine().stats().stale_completions >= rounds; }));
  const auto st = s.engine().stats();
  CHECK(st.frames_too_large == static_cast<std::uint64_t>(rounds));
  // The echoes were queued, never sent: dropped and counted, slices back.
  CHECK(st.bytes_queued == st.bytes_sent + st.bytes_dropped);
  CHECK(st.bytes_dropped == static_cast<std::uint64_t>(rounds) * 14);
  CHECK(eventually([&] { return s.engine().stats().pool_slices_in_use == 0; }));
  // The bystander is served as before.
  CHECK_FALSE(echo_roundtrip(other, pattern(700, 99)));
}

TEST_CASE("iocp: stop() during a connect burst", "[iocp][stop]") {
  ionet::options o = local_options();
  o.accept_depth = 16;
  server s(o);
  REQUIRE(s.start().ok());
  std::atomic<bool> go{true};
  std::atomic<int> connected{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t) {
    workers.emplace_back([&] {
      std::vector<ionet::framed_client> mine;
      for (int i = 0; i < 400 && go.load(); ++i) {
        ionet::framed_client c;
        if (c.connect("127.0.0.1", s.port(), 2000ms)) {
          connected.fetch_add(1);
          mine.push_back(std::move(c));
        }
      }
    });
  }
  REQUIRE(eventually([&] { return connected.load() >= 200; }));
  const auto t0 = steady::now();
  s.stop();  // connects still arriving
  const auto took = steady::now() - t0;
  go.store(false);
  for (auto& w : workers) w.join();
  CHECK(took < 15s);
  const auto st = s.engine().stats();
  CHECK(st.operations_in_flight == 0);
  CHECK(st.accepts_pending == 0);
  CHECK(st.connections_open == 0);
  CHECK(st.accepted == st.closed);
  CHECK(st.pool_slices_in_use == 0);
  s.stop();  // twice is fine
}

TEST_CASE("iocp: stop() during heavy writes to clients that do not read",
          "[iocp][stop]") {
  ionet::options o = local_options();
  o.max_message_bytes = 64 * 1024;
  o.max_queued_bytes = 1u << 20;
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::status failed;
  auto clients = connect_clients(s.port(), 20, failed);
  REQUIRE(failed.ok());
  REQUIRE(s.wait_connected(20));
  const auto ids = s.snapshot().connected;
  std::atomic<bool> go{true};
  std::atomic<std::uint64_t> accepted_sends{0};
  std::vector<std::thread> senders;
  for (int t = 0; t < 3; ++t) {
    senders.emplace_back([&, t] {
      const auto msg = pattern(60000, static_cast<std::uint64_t>(t));
      while (go.load()) {
        for (auto id : ids) {
          if (!s.engine().send(id, msg)) accepted_sends.fetch_add(1);
        }
      }
    });
  }
  REQUIRE(eventually([&] { return accepted_sends.load() >= 100; }));
  s.stop();  // writes in flight, queues full
  go.store(false);
  for (auto& t : senders) t.join();
  const auto st = s.engine().stats();
  CHECK(st.operations_in_flight == 0);
  CHECK(st.connections_open == 0);
  CHECK(st.pool_slices_in_use == 0);
  CHECK(st.bytes_queued == st.bytes_sent + st.bytes_dropped);
}
