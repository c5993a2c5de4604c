// handoffs: a loop's inbox of connections to serve. Only the first remote
// hand-off since the loop last looked asks for a wake-up; ids handed over
// while the loop serves are served in the same call.
#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/handoffs.hpp"

namespace {

// Ids here are plain numbers: the inbox only carries them.
ionet::connection_id id(std::uint64_t n) { return ionet::connection_id{n}; }
std::vector<ionet::connection_id> ids(std::initializer_list<std::uint64_t> ns) {
  std::vector<ionet::connection_id> v;
  for (const std::uint64_t n : ns) v.push_back(id(n));
  return v;
}

}  // namespace

TEST_CASE(
    "handoffs: one wake-up for every id handed over before the loop "
    "looks",
    "[unit][handoffs]") {
  ionet::detail::handoffs h;
  CHECK(h.push_remote(id(1)));
  CHECK_FALSE(h.push_remote(id(2)));
  CHECK_FALSE(h.push_remote(id(3)));
  std::vector<ionet::connection_id> served;
  int rounds = 0;
  auto serve = [&](ionet::connection_id c) { served.push_back(c); };
  auto after = [&] { ++rounds; };
  h.serve_local(serve, after);  // nothing local yet: not taken
  CHECK(served.empty());
  CHECK(rounds == 0);
  h.take_remote();
  CHECK(h.push_remote(id(4)));  // taken: the next one wakes again
  h.serve_local(serve, after);
  CHECK(served == ids({1, 2, 3}));
  CHECK(rounds == 1);
  h.clear();  // 4 is dropped
  h.take_remote();
  h.serve_local(serve, after);
  CHECK(served.size() == 3);
}

TEST_CASE(
    "handoffs: ids handed over while serving are served in the same "
    "call, after a delivery",
    "[unit][handoffs]") {
  ionet::detail::handoffs h;
  h.push_local(id(10));
  std::vector<ionet::connection_id> served;
  std::vector<int> rounds_at;
  int rounds = 0;
  h.serve_local(
      [&](ionet::connection_id c) {
        served.push_back(c);
        const std::uint64_t n = ionet::value_of(c);
        if (n < 13) h.push_local(id(n + 1));  // an inline handler's send
      },
      [&] {
        rounds_at.push_back(static_cast<int>(served.size()));
        ++rounds;
      });
  CHECK(served == ids({10, 11, 12, 13}));
  CHECK(rounds == 4);
  CHECK(rounds_at == std::vector<int>{1, 2, 3, 4});
}

TEST_CASE(
    "handoffs: ids from many threads all arrive, each wake-up asked "
    "for once per look",
    "[unit][handoffs]") {
  ionet::detail::handoffs h;
  std::atomic<int> wakes{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i)
        if (h.push_remote(id(static_cast<std::uint64_t>(t * 1000 + i))))
          wakes.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wakes == 1);  // the loop never looked meanwhile
  std::vector<ionet::connection_id> served;
  h.take_remote();
  h.serve_local([&](ionet::connection_id c) { served.push_back(c); }, [] {});
  std::sort(served.begin(), served.end());
  REQUIRE(served.size() == 4000);
  for (std::size_t i = 0; i < served.size(); ++i)
    CHECK(ionet::value_of(served[i]) == i);
}
