// The pull model's message buffers: the messages lying whole in one read
// are copied once into one buffer they share, which goes back to the pool
// when the last of them is released; a message assembled across reads has
// its own.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "catch.hpp"
#include "common/engine_core.hpp"
#include "common/framing.hpp"
#include "tests/core_fixture.hpp"

namespace {

using ionet::detail::engine_core;
using ionet::detail::event_access;
using ionet::detail::msg_buffer;

// Message i of a read: `size` bytes of i + 1.
std::vector<std::byte> pull_message(std::size_t i, std::size_t size) {
  return std::vector<std::byte>(size, static_cast<std::byte>(i + 1));
}

// `count` framed messages of `size` bytes each, made whole then filled.
std::vector<std::byte> pull_frames(std::size_t count, std::size_t size) {
  std::vector<std::byte> out(count * (4 + size));
  std::byte* at = out.data();
  for (std::size_t i = 0; i < count; ++i) {
    ionet::detail::put_header(at, static_cast<std::uint32_t>(size));
    const auto msg = pull_message(i, size);
    std::copy(msg.begin(), msg.end(), at + 4);
    at += 4 + size;
  }
  return out;
}

bool holds(const ionet::event& e, const std::vector<std::byte>& want) {
  return std::equal(e.data.begin(), e.data.end(), want.begin(), want.end());
}

std::uint32_t refs_of(const ionet::event& e) {
  return static_cast<const msg_buffer*>(event_access::owner(e))->refs.load();
}

// A pull-model engine_core with one connection open, driven by hand.
struct pull_core : ionet_test::core_with_connection {
  // Reads `input` from a buffer that is overwritten at once (the
  // backend's next read), and polls what it made.
  std::vector<ionet::event> read(std::vector<std::byte> input) {
    ionet::detail::event_batch batch;
    REQUIRE_FALSE(core.on_read(slot, input, batch));
    std::fill(input.begin(), input.end(), std::byte{0xee});
    core.deliver(batch);
    std::vector<ionet::event> got(64);
    got.resize(core.poll(got, std::chrono::milliseconds(0)));
    return got;
  }
};

}  // namespace

TEST_CASE("pull model: the messages of one read share one buffer",
          "[unit][pull]") {
  pull_core t;
  auto got = t.read(pull_frames(16, 20));
  REQUIRE(got.size() == 16);
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK(holds(got[i], pull_message(i, 20)));
    CHECK(event_access::owner(got[i]) == event_access::owner(got[0]));
  }
  // One buffer from the pool for the read, not one per message.
  CHECK(t.core.stats().allocations_after_start == 1);

  // Released in any order, it stays until the last one goes.
  CHECK(refs_of(got[0]) == 16);
  for (std::size_t i = 15; i > 0; --i) {
    (void)t.core.release_one(got[i]);
    CHECK(refs_of(got[0]) == i);
    CHECK(holds(got[0], pull_message(0, 20)));
  }
  (void)t.core.release_one(got[0]);

  // The next read takes that buffer again.
  got = t.read(pull_frames(16, 20));
  REQUIRE(got.size() == 16);
  CHECK(holds(got[15], pull_message(15, 20)));
  CHECK(t.core.stats().allocations_after_start == 1);
  for (const auto& e : got) (void)t.core.release_one(e);
}

TEST_CASE("pull model: a message split across reads has its own buffer",
          "[unit][pull]") {
  pull_core t;
  // Three messages of 100 bytes over two reads: the second starts in the
  // first read and ends in the second, with the third whole after it.
  const auto all = pull_frames(3, 100);
  const std::size_t cut = 104 + 50;
  auto first = t.read({all.begin(), all.begin() + cut});
  REQUIRE(first.size() == 1);
  CHECK(holds(first[0], pull_message(0, 100)));
  CHECK(refs_of(first[0]) == 1);

  auto second = t.read({all.begin() + cut, all.end()});
  REQUIRE(second.size() == 2);
  CHECK(holds(second[0], pull_message(1, 100)));
  CHECK(holds(second[1], pull_message(2, 100)));
  CHECK(event_access::owner(second[0]) != event_access::owner(second[1]));
  CHECK(refs_of(second[0]) == 1);
  CHECK(refs_of(second[1]) == 1);
  for (const auto& e : first) (void)t.core.release_one(e);
  for (const auto& e : second) (void)t.core.release_one(e);
}

TEST_CASE("pull model: empty messages share the read's buffer too",
          "[unit][pull]") {
  pull_core t;
  auto bytes = pull_frames(2, 0);
  const auto one = pull_frames(1, 8);
  bytes.insert(bytes.begin() + 4, one.begin(), one.end());
  auto got = t.read(bytes);
  REQUIRE(got.size() == 3);
  CHECK(got[0].data.empty());
  CHECK(holds(got[1], pull_message(0, 8)));
  CHECK(got[2].data.empty());
  CHECK(event_access::owner(got[0]) == event_access::owner(got[2]));
  CHECK(refs_of(got[1]) == 3);
  for (const auto& e : got) (void)t.core.release_one(e);
}
