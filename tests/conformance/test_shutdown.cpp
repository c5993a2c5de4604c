// shutdown(grace): new connections are refused, every connection is closed
// gracefully (queued replies go out first, the peer sees a clean end), and
// the engine stops once all are finished, or at the end of the grace
// period, resetting what is left.
#include "support.hpp"

using namespace ionet_test;

namespace {

constexpr int drain_replies = 16;
constexpr std::size_t drain_reply_size = 64 * 1024;  // 1 MiB in all

ionet::options drain_options() {
  ionet::options o = local_options();
  o.max_message_bytes = drain_reply_size;
  o.max_queued_bytes = 4u << 20;
  o.write_timeout = std::chrono::milliseconds(0);
  return o;
}

// Reads the replies the handler below queues, then the end of the stream.
std::string read_replies(ionet::framed_client& c, std::error_code& end) {
  std::vector<std::byte> got;
  for (int i = 0; i < drain_replies; ++i) {
    if (auto ec = c.read(got, wait_budget))
      return "reply " + std::to_string(i) + ": " + ec.message();
    if (!same_bytes(got, pattern(drain_reply_size, std::uint64_t(i))))
      return "reply " + std::to_string(i) + " differs";
  }
  end = read_until_closed(c);
  return {};
}

}  // namespace

TEST_CASE("shutdown: queued replies go out, then every connection ends cleanly",
          "[conformance][shutdown]") {
  // Every message is answered with 1 MiB of replies, queued at once.
  server s(drain_options(), [](ionet::engine& eng, const ionet::event& ev) {
    if (ev.type != ionet::event_type::message) return;
    for (int i = 0; i < drain_replies; ++i)
      (void)eng.send(ev.conn, pattern(drain_reply_size, std::uint64_t(i)));
  });
  REQUIRE(s.start().ok());
  constexpr int clients = 3;
  std::vector<ionet::framed_client> c(clients);
  std::vector<ionet::connection_id> ids;
  for (auto& one : c) {
    std::string why;
    const auto id = connect_one(s, one, why);
    INFO(why);
    REQUIRE(id);
    ids.push_back(*id);
  }
  // The clients have not read yet: most of the replies are still queued
  // when shutdown() begins.
  for (auto& one : c) REQUIRE_FALSE(one.write(pattern(1, 0)));
  REQUIRE(eventually([&] {
    return s.engine().stats().messages_sent == clients * drain_replies;
  }));

  std::vector<std::string> problems(clients);
  std::vector<std::error_code> ends(clients);
  std::vector<std::thread> readers;
  for (int i = 0; i < clients; ++i) {
    readers.emplace_back([&, i] {
      std::this_thread::sleep_for(100ms);  // shutdown() has begun
      const auto k = static_cast<std::size_t>(i);
      problems[k] = read_replies(c[k], ends[k]);
      c[k].close();  // our end: the server need not linger for it
    });
  }
  const auto t0 = steady::now();
  s.engine().shutdown(wait_budget);
  const auto took = steady::now() - t0;
  for (auto& t : readers) t.join();

  CHECK(took < wait_budget);  // it ended when the connections did
  for (int i = 0; i < clients; ++i) {
    INFO("client " << i << ": " << problems[static_cast<std::size_t>(i)]);
    CHECK(problems[static_cast<std::size_t>(i)].empty());
    CHECK(ends[static_cast<std::size_t>(i)] == ionet::errc::peer_closed);
  }
  s.stop();  // the pull loop takes what is left to poll
  const record r = s.snapshot();
  for (const auto id : ids) {
    REQUIRE(r.closed_of(id));
    CHECK(r.closed_of(id)->reason == ionet::errc::engine_stopped);
  }
  CHECK(r.order_errors.empty());
  CHECK(s.engine().send(ids[0], pattern(1, 0)) == ionet::errc::not_running);
  CHECK(s.engine().stats().bytes_dropped == 0);
}

TEST_CASE("shutdown: a peer that does not read is reset at the deadline",
          "[conformance][shutdown]") {
  server s(drain_options(), [](ionet::engine&, const ionet::event&) {});
  REQUIRE(s.start().ok());
  ionet::framed_client stuck;
  std::string why;
  const auto id = connect_one(s, stuck, why);
  INFO(why);
  REQUIRE(id);
  std::error_code refused;
  (void)fill_queue(s.engine(), *id, drain_reply_size, refused);
  REQUIRE(refused == ionet::errc::queue_full);

  std::atomic<bool> shut{false};
  std::thread stopper([&] {
    s.engine().shutdown(500ms);
    shut.store(true);
  });
  // Meanwhile a new client is turned away, and the stuck one stays.
  std::this_thread::sleep_for(100ms);
  const std::uint64_t rejected = s.engine().stats().rejected;
  CHECK(is_reset(refusal_of_new_client(s.port())));
  CHECK(s.engine().stats().rejected == rejected + 1);
  CHECK_FALSE(shut.load());
  stopper.join();

  CHECK(is_reset(read_until_closed(stuck)));
  s.stop();
  const record r = s.snapshot();
  REQUIRE(r.closed_of(*id));
  CHECK(r.closed_of(*id)->reason == ionet::errc::engine_stopped);
  CHECK(s.engine().stats().bytes_dropped > 0);
}

TEST_CASE("shutdown: not running, twice, then a restart",
          "[conformance][shutdown]") {
  auto idle = ionet::make_engine(local_options());
  idle->shutdown(wait_budget);  // never started: nothing to wait for

  server s(drain_options());  // echoes
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  CHECK_FALSE(echo_roundtrip(c, pattern(100, 1)));
  s.engine().shutdown(wait_budget);
  CHECK(read_until_closed(c) == ionet::errc::peer_closed);
  s.engine().shutdown(wait_budget);  // stopped already
  CHECK(s.engine().send(*id, pattern(1, 0)) == ionet::errc::not_running);

  // A restart is not draining: it takes connections again.
  REQUIRE(s.engine().start().ok());
  ionet::framed_client again;
  REQUIRE(connect_client(again, s.port()).ok());
  CHECK_FALSE(echo_roundtrip(again, pattern(100, 2)));
}
