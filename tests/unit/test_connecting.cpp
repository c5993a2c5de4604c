// engine_core's side of engine::connect(): a connecting slot queues sends
// without waking its backend, keeps its deadline, and counts a connection
// that never opened apart from one that did.
#include <chrono>
#include <thread>

#include "catch.hpp"
#include "common/completion.hpp"
#include "common/engine_core.hpp"
#include "tests/null_engine.hpp"

namespace {

using namespace std::chrono_literals;

struct outbound_core {
  explicit outbound_core(ionet::options o = {}) : core(self, with_two(o)) {
    REQUIRE(core.init(1).ok());
  }
  static ionet::options with_two(ionet::options o) {
    o.max_connections = 2;
    return o;
  }
  ionet_test::null_engine self;
  ionet::detail::engine_core core;
};

}  // namespace

TEST_CASE("connecting: sends queue and wake nothing until connect_done",
          "[unit][connecting]") {
  outbound_core t;
  int ctx = 0;
  const auto r = t.core.open_outbound(&ctx, 0ms);
  REQUIRE_FALSE(r.ec);
  const std::uint32_t slot = ionet::detail::slot_of(r.id);
  CHECK(t.core.state(slot).context.load() == &ctx);

  const std::byte payload[10]{};
  const auto sent = t.core.send(r.id, payload);
  CHECK_FALSE(sent.ec);
  CHECK_FALSE(sent.wake);  // the backend flushes after connect_done
  CHECK(t.core.queued_bytes(r.id) == 14u);

  ionet::detail::conn_protocol p;
  p.slot = slot;
  p.open_connecting(ionet::detail::generation_of(r.id));
  ionet::detail::event_batch out;
  // Nothing to write while it connects.
  CHECK(ionet::detail::next_send(t.core, p, 16, out).chain.empty());
  REQUIRE(ionet::detail::connect_done(t.core, p, {}, out));
  REQUIRE(out.events.size() == 1);
  CHECK(out.events[0].type == ionet::event_type::connected);
  CHECK(out.events[0].context() == &ctx);
  const auto taken = ionet::detail::next_send(t.core, p, 16, out);
  CHECK(taken.chain.bytes == 14u);
  auto chain = taken.chain;
  t.core.write_done(slot, chain, true);

  const ionet::engine_stats st = t.core.stats();
  CHECK(st.connects == 1);
  CHECK(st.accepted == 0);
  CHECK(st.connections_open == 1);
  CHECK(st.connect_failures == 0);
}

TEST_CASE("connecting: a reset ends it at once, a graceful close waits",
          "[unit][connecting]") {
  outbound_core t;
  const auto a = t.core.open_outbound(nullptr, 0ms);
  const auto b = t.core.open_outbound(nullptr, 0ms);
  REQUIRE_FALSE(a.ec);
  REQUIRE_FALSE(b.ec);
  ionet::detail::conn_protocol pa, pb;
  pa.slot = ionet::detail::slot_of(a.id);
  pa.open_connecting(ionet::detail::generation_of(a.id));
  pb.slot = ionet::detail::slot_of(b.id);
  pb.open_connecting(ionet::detail::generation_of(b.id));
  ionet::detail::event_batch out;

  const auto reset = t.core.request_close(a.id, ionet::close_mode::reset);
  CHECK(reset.wake);
  const auto now = ionet::detail::next_send(t.core, pa, 16, out);
  CHECK(now.close_now == ionet::errc::closed_by_user);
  CHECK(now.abortive);

  const auto graceful = t.core.request_close(b.id, ionet::close_mode::graceful);
  CHECK_FALSE(graceful.wake);  // the connect is still the backend's
  CHECK_FALSE(ionet::detail::next_send(t.core, pb, 16, out).close_now);
  REQUIRE(ionet::detail::connect_done(t.core, pb, {}, out));
  CHECK(ionet::detail::next_send(t.core, pb, 16, out).close_now ==
        ionet::errc::closed_by_user);

  // a closes without having opened: counted as a failure; b had opened.
  REQUIRE(ionet::detail::start_close(t.core, pa, now.close_now, true, out));
  CHECK(pa.abortive);  // nothing to say goodbye to
  REQUIRE(ionet::detail::start_close(t.core, pb, {}, true, out));
  const ionet::engine_stats st = t.core.stats();
  CHECK(st.connects == 2);
  CHECK(st.connect_failures == 1);
  CHECK(st.closed == 2);
}

TEST_CASE("connecting: the deadline is its only timeout, and never early",
          "[unit][connecting]") {
  ionet::options o;
  o.idle_timeout = 1ms;  // would close an open connection at once
  outbound_core t(o);
  const auto began = std::chrono::steady_clock::now();
  const auto r = t.core.open_outbound(nullptr, 150ms);
  REQUIRE_FALSE(r.ec);
  const std::uint32_t slot = ionet::detail::slot_of(r.id);
  CHECK(t.core.timeouts_on());
  std::error_code ec;
  for (int i = 0; i < 1000 && !ec; ++i) {
    std::this_thread::sleep_for(5ms);
    t.core.tick();
    ec = t.core.expired(slot);
  }
  CHECK(ec == ionet::errc::connect_timeout);
  CHECK(std::chrono::steady_clock::now() - began >= 150ms);
}

TEST_CASE("connecting: a full engine answers connection_limit",
          "[unit][connecting]") {
  outbound_core t;
  REQUIRE_FALSE(t.core.open_outbound(nullptr, 0ms).ec);
  REQUIRE(t.core.open_slot(0));
  CHECK(t.core.open_outbound(nullptr, 0ms).ec == ionet::errc::connection_limit);
  t.core.begin_drain();
  CHECK(t.core.open_outbound(nullptr, 0ms).ec == ionet::errc::not_running);
}
