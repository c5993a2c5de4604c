// A pull-model user that falls behind. The event queue fills; that must stop
// reading the busy connections, not the engine's threads: a new client still
// gets its connected event at once, and every message of the busy ones is
// delivered later, in order, none lost.
#include "support.hpp"

using namespace ionet_test;

TEST_CASE(
    "slow poller: a full event queue pauses the busy connections, "
    "a new client is still connected within 1 s",
    "[conformance][backpressure]") {
  constexpr int flooders = 6;
  constexpr std::uint32_t per_flooder = 1000;
  constexpr std::size_t message_bytes = 64;

  ionet::options o = local_options();
  o.event_queue_capacity = 16;
  // A fixed number of engine threads, fewer than the busy connections: a
  // thread that waited for the poller would leave none for the new client.
  o.threads = 2;
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());

  std::mutex lock;  // guards what the poller records
  std::vector<ionet::connection_id> connected;
  std::vector<steady::time_point> connected_at;
  std::map<ionet::connection_id, std::uint32_t> next_seq;
  std::vector<std::string> problems;
  std::uint64_t messages = 0;
  std::size_t closed = 0;
  std::atomic<bool> slow{true};
  std::atomic<bool> quit{false};

  std::thread poller([&] {
    std::vector<ionet::event> batch(4);
    while (!quit.load()) {
      const std::size_t n = eng->poll(batch, 20ms);
      {
        std::lock_guard g(lock);
        for (std::size_t i = 0; i < n; ++i) {
          const ionet::event& e = batch[i];
          if (e.type == ionet::event_type::connected) {
            connected.push_back(e.conn);
            connected_at.push_back(steady::now());
            next_seq[e.conn] = 0;
          } else if (e.type == ionet::event_type::message) {
            auto it = next_seq.find(e.conn);
            const std::uint32_t seq =
                e.data.size() >= 4 ? get_u32be(e.data.data()) : ~0u;
            if (it == next_seq.end() || seq != it->second) {
              if (problems.size() < 10) {
                problems.push_back("message " + std::to_string(seq) +
                                   " out of order on " +
                                   std::to_string(ionet::value_of(e.conn)));
              }
            } else {
              ++it->second;
            }
            ++messages;
          } else {
            ++closed;
          }
        }
      }
      eng->release(std::span(batch.data(), n));
      // The slow part: the user's work between polls.
      if (slow.load()) std::this_thread::sleep_for(50ms);
    }
  });
  auto seen_connected = [&] {
    std::lock_guard g(lock);
    return connected.size();
  };

  std::vector<ionet::framed_client> busy(flooders);
  for (auto& c : busy) REQUIRE(connect_client(c, eng->port()).ok());
  REQUIRE(eventually([&] { return seen_connected() == flooders; }));

  std::atomic<int> write_failures{0};
  std::vector<std::thread> writers;
  for (int f = 0; f < flooders; ++f) {
    writers.emplace_back([&, f] {
      std::vector<std::byte> m =
          pattern(message_bytes, static_cast<std::uint64_t>(f));
      for (std::uint32_t seq = 0; seq < per_flooder; ++seq) {
        put_u32be(m.data(), seq);
        if (busy[static_cast<std::size_t>(f)].write(m)) {
          write_failures.fetch_add(1);
          return;
        }
      }
    });
  }
  // The poller is behind now.
  REQUIRE(eventually(
      [&] { return eng->stats().events_pending >= o.event_queue_capacity; }));
  std::this_thread::sleep_for(200ms);

  ionet::framed_client late;
  REQUIRE(connect_client(late, eng->port()).ok());
  const auto connected_by = steady::now();
  const bool seen =
      eventually([&] { return seen_connected() == flooders + 1; });
  std::chrono::milliseconds latency{-1};
  if (seen) {
    std::lock_guard g(lock);
    latency = std::chrono::duration_cast<std::chrono::milliseconds>(
        connected_at.back() - connected_by);
  }

  // Catch up: everything sent must come, in order.
  slow.store(false);
  const std::uint64_t total = std::uint64_t{flooders} * per_flooder;
  const bool all_delivered = eventually(
      [&] {
        std::lock_guard g(lock);
        return messages >= total;
      },
      3 * wait_budget);
  for (auto& w : writers) w.join();
  for (auto& c : busy) c.close();
  late.close();
  const bool all_closed = eventually([&] {
    std::lock_guard g(lock);
    return closed == flooders + 1;
  });
  const auto st = eng->stats();
  quit.store(true);
  poller.join();

  INFO("the late client's connected event came "
       << latency.count() << " ms after its connect returned");
  CHECK(seen);
  CHECK(latency.count() >= 0);
  CHECK(latency < 1000ms);
  std::lock_guard g(lock);
  INFO("messages delivered " << messages << " of " << total << "; read pauses "
                             << st.read_pauses);
  CHECK(write_failures.load() == 0);
  CHECK(all_delivered);
  CHECK(messages == total);
  CHECK(problems.empty());
  CHECK(all_closed);
  eng->stop();
}
