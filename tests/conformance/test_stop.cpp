// stop() with live connections, writes in flight and a thread still calling
// send(): it returns, every connection is reported closed, later calls fail
// cleanly, and destroying the engine afterwards is clean (the ASan and TSan
// builds check that part).
#include "support.hpp"

using namespace ionet_test;

TEST_CASE("stop: with live connections while another thread still sends",
          "[conformance][stop]") {
  ionet::options o = local_options();
  o.max_message_bytes = 64 * 1024;
  o.max_queued_bytes = 512 * 1024;
  o.threads = 2;
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());

  // The user's thread: polls and releases, records what it sees, and keeps
  // going after stop() until poll() reports the engine drained.
  std::mutex lock;
  std::vector<ionet::connection_id> connected;
  std::vector<closed_record> closed;
  std::atomic<bool> stopped{false};
  std::atomic<bool> drained{false};
  std::atomic<int> empty_polls_after_stop{0};
  std::thread user([&] {
    std::vector<ionet::event> batch(128);
    const auto deadline = steady::now() + 2 * wait_budget;
    while (steady::now() < deadline) {
      const bool was_stopped = stopped.load();
      const std::size_t n = eng->poll(batch, 20ms);
      {
        std::lock_guard g(lock);
        for (std::size_t i = 0; i < n; ++i) {
          const ionet::event& e = batch[i];
          if (e.type == ionet::event_type::connected)
            connected.push_back(e.conn);
          if (e.type == ionet::event_type::closed)
            closed.push_back({e.conn, e.reason, e.context()});
        }
      }
      eng->release(std::span(batch.data(), n));
      if (n == 0 && was_stopped) {
        // After stop(): 0 means drained. Once is enough, but check it stays.
        if (empty_polls_after_stop.fetch_add(1) >= 2) break;
      }
    }
    drained.store(true);
  });

  // Clients that never read: the server's writes pile up in the sockets and
  // the engine's queues, so stop() meets writes in flight.
  const int nclients = 8;
  std::vector<ionet::framed_client> clients(nclients);
  for (auto& c : clients) REQUIRE(connect_client(c, eng->port()).ok());
  REQUIRE(eventually([&] {
    std::lock_guard g(lock);
    return connected.size() == static_cast<std::size_t>(nclients);
  }));
  std::vector<ionet::connection_id> ids;
  {
    std::lock_guard g(lock);
    ids = connected;
  }
  // Some incoming traffic too, so reads are in progress.
  for (auto& c : clients) REQUIRE_FALSE(c.write(pattern(5000, 1)));

  // The sender keeps calling send() through stop() and after it.
  std::atomic<bool> stop_sending{false};
  std::atomic<std::uint64_t> sent_ok{0}, accepted_after_stop{0},
      failed_after_stop{0};
  std::thread sender([&] {
    const auto msg = pattern(16 * 1024, 2);
    std::size_t k = 0;
    const auto deadline = steady::now() + 2 * wait_budget;
    while (!stop_sending.load() && steady::now() < deadline) {
      const bool after = stopped.load();  // read before the call
      const std::error_code ec = eng->send(ids[k++ % ids.size()], msg);
      if (!ec) sent_ok.fetch_add(1);
      if (after) (ec ? failed_after_stop : accepted_after_stop).fetch_add(1);
      if (ec && !after) std::this_thread::yield();  // queue_full: keep trying
    }
  });

  // Wait until writes are really in flight.
  REQUIRE(eventually([&] { return eng->stats().bytes_sent > 256 * 1024; }));
  eng->stop();
  stopped.store(true);
  std::this_thread::sleep_for(50ms);  // the sender keeps going a little
  // stop() is safe to call twice, even with a thread still sending.
  eng->stop();
  std::this_thread::sleep_for(20ms);
  stop_sending.store(true);
  sender.join();
  user.join();

  CHECK(drained.load());
  CHECK(sent_ok.load() > 0);
  CHECK(failed_after_stop.load() > 0);
  CHECK(accepted_after_stop.load() == 0);  // nothing is accepted once stopped

  // Every connection got exactly one closed event; stop() closed them all.
  {
    std::lock_guard g(lock);
    CHECK(connected.size() == static_cast<std::size_t>(nclients));
    CHECK(closed.size() == connected.size());
    for (ionet::connection_id id : connected) {
      int n = 0;
      for (const auto& c : closed) {
        if (c.id == id) {
          ++n;
          CHECK(c.reason == ionet::errc::engine_stopped);
        }
      }
      CHECK(n == 1);
    }
  }
  // Stopped and drained: poll() answers 0 at once; calls fail cleanly.
  std::vector<ionet::event> batch(8);
  const auto t0 = steady::now();
  CHECK(eng->poll(batch, 5000ms) == 0);
  CHECK(steady::now() - t0 < 2500ms);
  CHECK(eng->send(ids[0], pattern(10, 3)));
  CHECK(eng->close(ids[0]));
  CHECK(eng->set_context(ids[0], &lock));

  eng.reset();  // destroy: must be clean under the sanitizers

  // The clients see their connections end (EOF or reset), not silence.
  for (auto& c : clients) {
    const std::error_code ec = read_until_closed(c);
    CHECK(ec);
    CHECK_FALSE(is_timeout(ec));
  }
}

TEST_CASE(
    "stop: destroying a running engine with live connections and pending events",
    "[conformance][stop]") {
  auto eng = ionet::make_engine(local_options());
  REQUIRE(eng->start().ok());
  std::vector<ionet::framed_client> clients(4);
  for (auto& c : clients) REQUIRE(connect_client(c, eng->port()).ok());
  for (auto& c : clients) {
    for (int i = 0; i < 10; ++i)
      REQUIRE_FALSE(c.write(pattern(2000, static_cast<std::uint64_t>(i))));
  }
  // Take a few events and reply, leave the rest queued in the engine.
  std::vector<ionet::event> batch(4);
  std::size_t n = 0;
  const auto deadline = steady::now() + wait_budget;
  while (n == 0 && steady::now() < deadline) n = eng->poll(batch, 20ms);
  REQUIRE(n > 0);
  for (std::size_t i = 0; i < n; ++i) {
    if (batch[i].type == ionet::event_type::message) {
      (void)eng->send(batch[i].conn, batch[i].data);
    }
  }
  eng->release(std::span(batch.data(), n));
  // Let some messages queue up unpolled (a message is counted when it is
  // decoded, and queued a moment later, at the end of its loop's batch).
  REQUIRE(eventually([&] {
    const auto s = eng->stats();
    return s.messages_received >= 8 && s.events_pending > 0;
  }));

  eng.reset();  // no stop(): the destructor does it

  for (auto& c : clients) {
    const std::error_code ec = read_until_closed(c);
    CHECK(ec);
    CHECK_FALSE(is_timeout(ec));
  }
}

TEST_CASE("stop: wakes a thread blocked in poll()", "[conformance][stop]") {
  auto eng = ionet::make_engine(local_options());
  REQUIRE(eng->start().ok());
  std::atomic<bool> returned{false};
  std::atomic<std::size_t> got{99};
  steady::time_point when{};
  std::thread user([&] {
    std::vector<ionet::event> batch(8);
    got.store(eng->poll(batch, 20000ms));  // nothing will come
    when = steady::now();
    returned.store(true);
  });
  std::this_thread::sleep_for(100ms);
  const auto stop_at = steady::now();
  eng->stop();
  // Bounded: if poll() is not woken, wait no longer than its own timeout.
  const bool woke = eventually([&] { return returned.load(); }, 25000ms);
  user.join();
  CHECK(woke);
  CHECK(got.load() == 0);
  CHECK(when - stop_at < 2000ms);
}

TEST_CASE(
    "stop: a connection that is closing when stop() comes is still reported once",
    "[conformance][stop]") {
  // close() was requested, its queued bytes are not flushed yet (the
  // client does not read), and then stop() comes: one closed event.
  ionet::options o = local_options();
  o.max_message_bytes = 64 * 1024;
  server s(o, [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  // Fill the socket buffers so the close cannot complete.
  int accepted = 0;
  const auto deadline = steady::now() + wait_budget;
  while (steady::now() < deadline) {
    if (s.engine().send(*id, pattern(64 * 1024, 1))) break;
    ++accepted;
  }
  CHECK(accepted > 0);
  CHECK_FALSE(s.engine().close(*id));
  s.stop();
  const record r = s.snapshot();
  REQUIRE(r.closed.size() == 1);
  CHECK(r.closed[0].id == *id);
  // Closed by stop() (still flushing) or, if the flush won, by the user.
  CHECK((r.closed[0].reason == ionet::errc::engine_stopped ||
         r.closed[0].reason == ionet::errc::closed_by_user));
  CHECK(r.order_errors.empty());
}

namespace {

// Runs `f` on a thread of its own and waits up to `limit` for it to return.
// False when it did not: the thread is then left blocked (detached), so
// whatever it uses must outlive the test (the callers leak their engine).
template <class F>
bool returns_within(F f, std::chrono::seconds limit) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread t([f, done]() mutable {
    f();
    done->store(true);
  });
  const bool ok = eventually([&] { return done->load(); }, limit);
  if (ok) {
    t.join();
  } else {
    t.detach();
  }
  return ok;
}

// What the inline handlers below share with the test, kept alive by the
// handler itself (a deadlocked engine is leaked, handler and all).
struct handler_stop_state {
  std::atomic<int> stops_called{0};
  std::atomic<int> stops_returned{0};
  std::atomic<int> closed{0};

  void stop_from_handler(ionet::engine& eng) {
    stops_called.fetch_add(1);
    eng.stop();
    stops_returned.fetch_add(1);
  }
};

// The user's stop(), bounded by a watchdog. On a deadlock the engine is
// leaked (its threads still use it) and false returned.
bool user_stop_returns(std::unique_ptr<ionet::engine>& eng) {
  ionet::engine* raw = eng.get();
  if (returns_within([raw] { raw->stop(); }, 30s)) return true;
  (void)eng.release();
  return false;
}

// After stop(): nothing open, held or in flight.
void check_released(const ionet::engine& eng) {
  const auto s = eng.stats();
  CHECK(s.connections_open == 0);
  CHECK(s.pool_slices_in_use == 0);
  CHECK(s.operations_in_flight == 0);
}

}  // namespace

TEST_CASE("stop: an inline handler may call stop() (an idle_timeout close)",
          "[conformance][stop]") {
  // The closed event of an idle_timeout comes from the engine's timeout
  // sweep (on IOCP: the housekeeper thread). stop() there begins the stop
  // and returns at once; the user's stop() afterwards waits and joins.
  auto st = std::make_shared<handler_stop_state>();
  ionet::options o = local_options();
  o.threads = 2;
  o.idle_timeout = 300ms;
  o.handler = [st](ionet::engine& eng, const ionet::event& ev) {
    if (ev.type != ionet::event_type::closed) return;
    st->closed.fetch_add(1);
    if (ev.reason == ionet::errc::idle_timeout) st->stop_from_handler(eng);
  };
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());
  ionet::framed_client idle;
  REQUIRE(connect_client(idle, eng->port()).ok());

  // The watchdog: the handler's stop() must return.
  const bool handler_returned =
      eventually([&] { return st->stops_returned.load() == 1; }, 30000ms);
  CHECK(st->stops_called.load() == 1);
  CHECK(handler_returned);
  if (handler_returned) {
    // The stop has begun: no call enters any more.
    CHECK(eng->send(made_id(0, 1), pattern(4, 1)) == ionet::errc::not_running);
  }
  if (!handler_returned) {
    (void)eng.release();  // deadlocked: its threads still use it
    return;
  }
  const bool stopped = user_stop_returns(eng);
  CHECK(stopped);
  if (!stopped) return;
  CHECK(st->closed.load() == 1);
  CHECK(eng->stats().closed == 1);
  check_released(*eng);
  eng.reset();
  const std::error_code ec = read_until_closed(idle);
  CHECK(ec);
  CHECK_FALSE(is_timeout(ec));
}

TEST_CASE("stop: inline handlers that call stop() while the user's stop() runs",
          "[conformance][stop]") {
  // Every connection's closed event (engine_stopped) calls stop() again,
  // on an engine thread, while the user's thread is inside stop() waiting
  // for those very threads.
  auto st = std::make_shared<handler_stop_state>();
  ionet::options o = local_options();
  o.threads = 2;
  o.handler = [st](ionet::engine& eng, const ionet::event& ev) {
    if (ev.type != ionet::event_type::closed) return;
    st->closed.fetch_add(1);
    st->stop_from_handler(eng);
  };
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());
  ionet::status failed;
  auto clients = connect_clients(eng->port(), 6, failed);
  REQUIRE(failed.ok());
  REQUIRE(eventually([&] { return eng->stats().accepted == 6; }));

  const bool stopped = user_stop_returns(eng);
  CHECK(stopped);
  if (!stopped) return;
  CHECK(st->closed.load() == 6);
  CHECK(st->stops_returned.load() == st->stops_called.load());
  check_released(*eng);
  eng.reset();
  for (auto& c : clients) {
    const std::error_code ec = read_until_closed(c);
    CHECK(ec);
    CHECK_FALSE(is_timeout(ec));
  }
}
