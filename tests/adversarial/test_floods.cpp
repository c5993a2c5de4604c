// Floods: connect-then-reset by the thousand, more connections than
// max_connections, a client that never reads while the server sends, and
// stop() in the middle of full load.
#include <atomic>
#include <thread>

#include "adversarial.hpp"

using namespace ionet_test;

TEST_CASE("adversarial: 10,000 connect-then-reset", "[adversarial]") {
  server s;
  REQUIRE(s.start().ok());
  ionet::framed_client good;
  REQUIRE(connect_client(good, s.port()).ok());
  const int total = sanitized ? 3000 : 10000;
  std::atomic<int> connected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < total / 4; ++i) {
        ionet::framed_client c;
        if (c.connect("127.0.0.1", s.port(),
                      std::chrono::milliseconds(wait_budget))) {
          connected.fetch_add(1);
          c.reset();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(connected.load() == total);
  REQUIRE_FALSE(echo_roundtrip(good, pattern(3000, 1)));
  // Every one of them ends; the engine accepted each (or refused it early:
  // a reset that beats the accept is the OS's to drop).
  CHECK(eventually([&] { return s.engine().stats().connections_open == 1; },
                   60s));
  const auto st = s.engine().stats();
  CHECK(st.accepted <= static_cast<std::uint64_t>(total) + 1);
  CHECK(s.snapshot().order_errors.empty());
  settle_and_check(s);
}

TEST_CASE("adversarial: a flood past max_connections is refused and counted",
          "[adversarial]") {
  ionet::options o = local_options();
  o.max_connections = 50;
  server s(o);
  REQUIRE(s.start().ok());
  ionet::status failed;
  auto held = connect_clients(s.port(), 50, failed);
  REQUIRE(failed.ok());
  REQUIRE(s.wait_connected(50));
  const int flood = scaled(1000);
  int refused_seen = 0;
  for (int i = 0; i < flood; ++i) {
    // Accepted by the OS, then reset by the engine.
    if (is_reset(refusal_of_new_client(s.port(), 5s))) {
      ++refused_seen;
    }
    if (i % 100 == 0) {
      REQUIRE_FALSE(
          echo_roundtrip(held[static_cast<std::size_t>(i / 100)],
                         pattern(300, static_cast<std::uint64_t>(i))));
    }
  }
  CHECK(refused_seen == flood);
  CHECK(eventually([&] {
    return s.engine().stats().rejected == static_cast<std::uint64_t>(flood);
  }));
  for (std::size_t k = 0; k < held.size(); ++k) {
    CHECK_FALSE(echo_roundtrip(held[k], pattern(100, 1000 + k)));
  }
  const auto st = s.engine().stats();
  CHECK(st.connections_open == 50);
  CHECK(st.accepted == 50);
  settle_and_check(s);
}

TEST_CASE(
    "adversarial: a client that never reads gets queue_full, memory stays bounded",
    "[adversarial]") {
  ionet::options o = local_options();
  o.max_message_bytes = 64 * 1024;
  o.max_queued_bytes = 1u << 20;
  o.write_timeout =
      std::chrono::milliseconds(0);  // hold it: we watch the bound
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client sink;  // never reads
  std::string why;
  const auto id = connect_one(s, sink, why);
  INFO(why);
  REQUIRE(id);
  ionet::framed_client good;
  REQUIRE(connect_client(good, s.port()).ok());
  REQUIRE(s.wait_connected(2));
  const auto good_id = s.snapshot().connected.at(1);

  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;
  for (int i = 0; i < 2000; ++i) {
    const auto ec =
        s.engine().send(*id, pattern(50000, static_cast<std::uint64_t>(i)));
    if (!ec) {
      ++accepted;
    } else {
      CHECK(ec == ionet::errc::queue_full);
      ++refused;
    }
  }
  CHECK(refused > 0);
  // What the engine holds for the sink: within its cap, whatever was sent.
  const auto st = s.engine().stats();
  const std::uint64_t held = st.bytes_queued - st.bytes_sent - st.bytes_dropped;
  CHECK(held <= o.max_queued_bytes);
  CHECK(st.pool_slices_in_use * o.slice_bytes <= 2 * o.max_queued_bytes);
  // The good client is served meanwhile (a send of its own goes through).
  CHECK_FALSE(s.engine().send(good_id, pattern(1000, 5)));
  std::vector<std::byte> got;
  REQUIRE_FALSE(good.read(got));
  CHECK(same_bytes(got, pattern(1000, 5)));
  s.stop();
  check_stopped(s);
  CHECK(accepted > 0);
}

TEST_CASE(
    "adversarial: peers that send but do not read are paused, then resumed losing nothing",
    "[adversarial]") {
  ionet::options o = local_options();
  // Room past the pause (half of max_queued_bytes) for what is already on
  // its way when reading stops: up to a ring of receive buffers on io_uring.
  o.max_queued_bytes = 4u << 20;
  o.max_total_queued_bytes = 8u << 20;
  o.write_timeout =
      std::chrono::milliseconds(0);  // the hogs are slow on purpose
  // A paused hog may hold a message in part: that must not count as slow
  // sending while the engine is the one not reading.
  o.read_timeout = std::chrono::milliseconds(slow_platform ? 1500 : 500);
  // Echoes inline, so a connection's queue is up to date when the engine
  // decides whether to read it again.
  server s(o, {}, server::delivery::inline_handler);
  REQUIRE(s.start().ok());
  // Each hog sends more than the kernel's loopback buffers hold in both
  // directions (a few MiB) and half its queue cap, so reading must pause.
  constexpr std::size_t size = 8192;
  const int count = 2500;
  std::vector<ionet::framed_client> hogs(2);
  for (auto& h : hogs) REQUIRE(connect_client(h, s.port()).ok());
  ionet::framed_client good;
  REQUIRE(connect_client(good, s.port()).ok());
  std::atomic<int> write_errors{0};
  std::vector<std::thread> writers;
  for (std::size_t k = 0; k < hogs.size(); ++k) {
    writers.emplace_back([&, k] {
      for (int i = 0; i < count; ++i) {
        if (hogs[k].write(
                pattern(size, k * 100000 + static_cast<std::uint64_t>(i)))) {
          write_errors.fetch_add(1);
          return;
        }
      }
    });
  }
  // The engine stops reading the hogs before its queues overflow ...
  CHECK(eventually([&] { return s.engine().stats().read_pauses > 0; }, 60s));
  const auto st = s.engine().stats();
  CHECK(st.bytes_queued - st.bytes_sent - st.bytes_dropped <=
        o.max_total_queued_bytes);
  // ... and keeps serving everyone else meanwhile.
  REQUIRE_FALSE(echo_roundtrip(good, pattern(3000, 7)));
  // Paused for several read timeouts: nobody is cut off.
  std::this_thread::sleep_for(o.read_timeout * 3);
  CHECK(s.snapshot().closed.empty());
  // When the hogs read, reading resumes and every echo arrives, in order.
  std::vector<std::thread> readers;
  std::atomic<int> bad{0};
  for (std::size_t k = 0; k < hogs.size(); ++k) {
    readers.emplace_back([&, k] {
      std::vector<std::byte> got;
      for (int i = 0; i < count; ++i) {
        if (hogs[k].read(got, 30s) ||
            !same_bytes(
                got,
                pattern(size, k * 100000 + static_cast<std::uint64_t>(i)))) {
          bad.fetch_add(1);
          return;
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  for (auto& t : readers) t.join();
  CHECK(write_errors.load() == 0);
  CHECK(bad.load() == 0);
  CHECK(s.snapshot().echo_failures == 0);
  settle_and_check(s);
  s.stop();
  check_stopped(s);
}

TEST_CASE("adversarial: stop() under full load", "[adversarial]") {
  server s;
  REQUIRE(s.start().ok());
  const int n = scaled(40);
  std::vector<ionet::framed_client> clients(static_cast<std::size_t>(n));
  for (auto& c : clients) REQUIRE(connect_client(c, s.port()).ok());
  std::atomic<bool> go{true};
  std::atomic<std::uint64_t> echoed{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < n; ++k) {
    threads.emplace_back([&, k] {
      auto& c = clients[static_cast<std::size_t>(k)];
      for (std::uint64_t i = 0; go.load(); ++i) {
        // Several in flight, so the server always has reads and writes going.
        for (std::uint64_t j = 0; j < 8; ++j) {
          if (c.write(pattern(700, i * 8 + j))) return;
        }
        std::vector<std::byte> got;
        for (int j = 0; j < 8; ++j) {
          if (c.read(got, 5s)) return;
        }
        echoed.fetch_add(8);
      }
    });
  }
  REQUIRE(eventually(
      [&] { return echoed.load() > static_cast<std::uint64_t>(n) * 50; }));
  s.stop();
  go.store(false);
  for (auto& t : threads) t.join();
  check_stopped(s);
  const record r = s.snapshot();
  CHECK(r.closed.size() == static_cast<std::size_t>(n));
  for (const auto& c : r.closed) {
    INFO(c.reason.message());
    CHECK((c.reason == ionet::errc::engine_stopped ||
           c.reason == ionet::errc::connection_reset));
  }
}
