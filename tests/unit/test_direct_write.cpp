// engine_core::send with a direct write: what the socket took at once is
// written from the caller's buffer, the rest queued, for every point the
// socket may stop at (inside the header too); and never while something is
// queued or being written, so bytes keep their order.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/engine_core.hpp"
#include "common/framing.hpp"
#include "tests/core_fixture.hpp"

namespace {

using ionet::detail::engine_core;
using ionet::detail::slice_chain;

// A socket that takes `room` bytes at once and records them.
struct fake_socket {
  std::size_t room = 0;
  int calls = 0;
  std::vector<std::byte> wrote;
  static std::size_t write(void* self, std::uint32_t,
                           std::span<const std::byte> head,
                           std::span<const std::byte> body) {
    auto& s = *static_cast<fake_socket*>(self);
    ++s.calls;
    std::size_t n = 0;
    for (auto part : {head, body}) {
      const std::size_t k = std::min(part.size(), s.room - n);
      s.wrote.insert(s.wrote.end(), part.begin(), part.begin() + k);
      n += k;
    }
    return n;
  }
};

// What the backend would write, as a flush does: take and write until the
// queue runs dry (which also lets the slot go idle again).
std::vector<std::byte> queued_bytes(engine_core& core, std::uint32_t slot) {
  std::vector<std::byte> out;
  for (;;) {
    slice_chain chain = core.take_queue(slot).chain;
    if (chain.empty()) return out;
    std::size_t got = 0;
    for (std::uint32_t s = chain.head; s != ionet::detail::no_slice;
         s = core.slices().next(s)) {
      const std::byte* p = core.slices().data(s);
      out.insert(out.end(), p, p + core.slices().length(s));
      got += core.slices().length(s);
    }
    CHECK(got == chain.bytes);
    core.write_done(slot, chain, true);
  }
}

std::vector<std::byte> direct_pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  return v;
}

// The core with one connection, and a socket with room for everything.
struct one_connection : ionet_test::core_with_connection {
  explicit one_connection(const ionet::options& o = two_slots())
      : core_with_connection(o) {
    sock.room = 1u << 20;
  }
  fake_socket sock;
  const engine_core::direct_write now{&fake_socket::write, &sock};
};

}  // namespace

TEST_CASE("direct write: the socket may stop anywhere, the rest is queued",
          "[unit][direct_write]") {
  ionet::options o = one_connection::two_slots();
  o.slice_bytes = 64;  // messages of several slices, the header split too
  o.max_message_bytes = 4096;
  o.max_queued_bytes = 1u << 20;
  one_connection t(o);
  engine_core& core = t.core;
  const auto& id = t.id;
  const std::uint32_t slot = t.slot;

  for (std::size_t size : {0u, 1u, 59u, 60u, 61u, 200u, 1019u, 1020u, 1021u}) {
    const auto msg = direct_pattern(size, static_cast<unsigned>(size));
    // Made whole, then filled (gcc 12 at -O3 misreads an insert behind a
    // 4-byte vector as out of bounds).
    std::vector<std::byte> frame(4 + size);
    ionet::detail::put_header(frame.data(), static_cast<std::uint32_t>(size));
    std::copy(msg.begin(), msg.end(), frame.begin() + 4);
    for (std::size_t room = 0; room <= frame.size(); ++room) {
      INFO("message " << size << " bytes, the socket takes " << room);
      fake_socket sock;
      sock.room = room;
      const engine_core::direct_write now{&fake_socket::write, &sock};
      const auto before = core.slices().in_use();
      const auto r = core.send(*id, msg, &now);
      REQUIRE_FALSE(r.ec);
      // Messages of up to 16 slices (engine_core's in-place limit) only;
      // a larger one is queued whole.
      const bool direct = frame.size() <= 16u * o.slice_bytes;
      CHECK(sock.calls == (direct ? 1 : 0));
      // Woken only when bytes are left for the backend to write.
      CHECK(r.wake == (!direct || room < frame.size()));
      std::vector<std::byte> all = sock.wrote;
      const auto rest = queued_bytes(core, slot);
      all.insert(all.end(), rest.begin(), rest.end());
      CHECK(all == frame);
      CHECK(core.slices().in_use() == before);  // every slice came back
    }
  }
  const auto st = core.stats();
  CHECK(st.bytes_sent == st.bytes_queued);
  // Nothing is left counted against the connection: its reading is not
  // paused for bytes that went out directly.
  CHECK(core.may_resume_reading(slot));
  CHECK_FALSE(core.should_pause_reading(slot));
}

TEST_CASE("direct write: not while bytes are queued, so order is kept",
          "[unit][direct_write]") {
  one_connection t;

  // Queued from another thread (no direct write there): the owner's next
  // send must queue behind it, not write past it.
  const auto first = direct_pattern(10, 1);
  auto r = t.core.send(*t.id, first);
  REQUIRE_FALSE(r.ec);
  CHECK(r.wake);
  r = t.core.send(*t.id, direct_pattern(20, 2), &t.now);
  REQUIRE_FALSE(r.ec);
  CHECK(t.sock.calls == 0);
  CHECK(queued_bytes(t.core, t.slot).size() == 4 + 10 + 4 + 20);
  // Written, and the queue ran dry: the slot is idle again, and the next
  // send goes straight out.
  r = t.core.send(*t.id, direct_pattern(30, 3), &t.now);
  REQUIRE_FALSE(r.ec);
  CHECK(t.sock.calls == 1);
  CHECK_FALSE(r.wake);
  CHECK(t.sock.wrote.size() == 4 + 30);
}

TEST_CASE("direct write: send_pool_exhausted counts refused sends only",
          "[unit][direct_write][stats]") {
  one_connection t;
  engine_core& core = t.core;
  // A queued message leaves room in its slice; then every other slice is
  // held elsewhere.
  REQUIRE_FALSE(core.send(*t.id, direct_pattern(10, 1)).ec);
  slice_chain held;
  REQUIRE(core.slices().take_chain(
      core.slices().capacity() - core.slices().in_use(), held));
  // A direct write finds no spare slices, but the message fits behind the
  // queued one: accepted, so not counted.
  REQUIRE_FALSE(core.send(*t.id, direct_pattern(20, 2), &t.now).ec);
  CHECK(core.stats().send_pool_exhausted == 0);
  // One that needs a slice of its own is refused, and counted.
  const auto big = direct_pattern(core.opts().slice_bytes, 3);
  CHECK(core.send(*t.id, big, &t.now).ec == ionet::errc::pool_exhausted);
  CHECK(core.send(*t.id, big).ec == ionet::errc::pool_exhausted);
  CHECK(core.stats().send_pool_exhausted == 2);
  core.slices().give_chain(held);
  CHECK(queued_bytes(core, t.slot).size() == 4 + 10 + 4 + 20);
}

TEST_CASE("direct write: a close meanwhile waits for it and drops the rest",
          "[unit][direct_write]") {
  // A direct write may run on any thread, so the connection's own thread
  // can close it meanwhile. The close must wait for the write to finish
  // (the backend closes the socket right after it), and what the socket
  // did not take is dropped with the rest of the queue, not left behind.
  one_connection t;
  engine_core& core = t.core;
  const auto& id = t.id;
  const std::uint32_t slot = t.slot;
  const auto before = core.slices().in_use();

  struct closing_socket {
    engine_core* core = nullptr;
    std::uint32_t slot = 0;
    std::thread closer;
    std::atomic<bool> wrote{false};
    bool close_waited = false;
    static std::size_t write(void* self, std::uint32_t,
                             std::span<const std::byte>,
                             std::span<const std::byte>) {
      auto& s = *static_cast<closing_socket*>(self);
      s.closer = std::thread([&s] {
        ionet::detail::event_batch batch;
        s.core->close_slot(s.slot, make_error_code(ionet::errc::peer_closed),
                           batch);
        s.close_waited = s.wrote.load();
      });
      // Until the close has begun (the slot no longer takes sends), then
      // a while longer: a close that did not wait would be over by then.
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::seconds(10);
      for (;;) {
        auto& st = s.core->state(s.slot);
        st.lock.lock();
        const bool open = st.open;
        st.lock.unlock();
        if (!open || std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::yield();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      s.wrote = true;
      return 10;  // the socket took 10 of the frame's bytes
    }
  } sock;
  sock.core = &core;
  sock.slot = slot;
  const engine_core::direct_write now{&closing_socket::write, &sock};
  const auto r = core.send(*id, direct_pattern(100, 7), &now);
  sock.closer.join();
  CHECK_FALSE(r.ec);    // accepted, then dropped with the connection
  CHECK_FALSE(r.wake);  // nothing for the backend: it closed the slot
  CHECK(sock.close_waited);
  CHECK(core.slices().in_use() == before);  // the rest's slices came back
  const auto st = core.stats();
  CHECK(st.bytes_sent == 10);
  CHECK(st.bytes_dropped == 4 + 100 - 10);
}

namespace {

// Frames of `count` messages of `size` bytes, as a client writes them.
std::vector<std::byte> frames(int count, std::size_t size) {
  // Made whole, then filled (gcc 12 at -O3 misreads inserts into a
  // growing vector as out of bounds, as in the first test).
  std::vector<std::byte> out(static_cast<std::size_t>(count) * (4 + size));
  std::byte* at = out.data();
  for (int i = 0; i < count; ++i) {
    ionet::detail::put_header(at, static_cast<std::uint32_t>(size));
    const auto msg = direct_pattern(size, static_cast<unsigned>(i));
    std::copy(msg.begin(), msg.end(), at + 4);
    at += 4 + size;
  }
  return out;
}

}  // namespace

TEST_CASE("direct write: replies to a pipelined burst wait for one write",
          "[unit][direct_write]") {
  // A read that brings several messages of one connection: the inline
  // handler's replies to all but the last queue, and the last one finds
  // them queued, so the connection's thread writes them all at once. One
  // message alone is answered at once. (Written one by one, a burst of 16
  // replies was 16 sends, and a pipelining client's throughput fell to a
  // tenth of plain libuv's.)
  fake_socket sock;
  sock.room = 1u << 20;
  const engine_core::direct_write now{&fake_socket::write, &sock};
  engine_core* core_ptr = nullptr;
  ionet::options o = one_connection::two_slots();
  o.handler = [&](ionet::engine&, const ionet::event& e) {
    if (e.type != ionet::event_type::message) return;
    CHECK_FALSE(core_ptr->send(e.conn, e.data, &now).ec);
  };
  one_connection t(o);
  core_ptr = &t.core;
  engine_core& core = t.core;
  const std::uint32_t slot = t.slot;
  ionet::detail::event_batch batch;

  // Inline events are views into the read: it lives until delivered.
  const auto burst = frames(16, 20);
  REQUIRE_FALSE(core.on_read(slot, burst, batch));
  core.deliver(batch);
  CHECK(sock.calls == 0);
  CHECK(queued_bytes(core, slot) == burst);

  const auto single = frames(1, 20);
  REQUIRE_FALSE(core.on_read(slot, single, batch));
  core.deliver(batch);
  CHECK(sock.calls == 1);
  CHECK(sock.wrote == frames(1, 20));
}

TEST_CASE("direct write: in the pull model, not while more messages are out",
          "[unit][direct_write]") {
  // The user's thread answers a polled batch: while more of a connection's
  // messages are in its hands, its replies queue for one write by the
  // connection's thread; the reply to a connection's only message goes at
  // once.
  one_connection t;
  ionet::detail::event_batch batch;

  REQUIRE_FALSE(t.core.on_read(t.slot, frames(3, 20), batch));
  t.core.deliver(batch);
  std::vector<ionet::event> got(8);
  REQUIRE(t.core.poll(got, std::chrono::milliseconds(0)) == 3);
  for (std::size_t i = 0; i < 3; ++i)
    CHECK_FALSE(t.core.send(got[i].conn, got[i].data, &t.now).ec);
  CHECK(t.sock.calls == 0);
  for (std::size_t i = 0; i < 3; ++i) (void)t.core.release_one(got[i]);
  CHECK(queued_bytes(t.core, t.slot) == frames(3, 20));

  REQUIRE_FALSE(t.core.on_read(t.slot, frames(1, 20), batch));
  t.core.deliver(batch);
  REQUIRE(t.core.poll(got, std::chrono::milliseconds(0)) == 1);
  CHECK_FALSE(t.core.send(got[0].conn, got[0].data, &t.now).ec);
  CHECK(t.sock.calls == 1);
  (void)t.core.release_one(got[0]);
}
