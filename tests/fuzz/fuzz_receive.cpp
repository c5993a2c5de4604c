// libFuzzer target: one connection's receive path through the engine core,
// with no backend and no socket: bytes arrive in arbitrary splits, decoded
// messages become events, the user echoes and releases them (pull model) or
// a handler echoes inline, sends are taken and "written", and the
// connection closes (on a bad frame, or at the end). Afterwards every
// slice, message buffer and slot must be back, and the counters must add
// up: queued = sent + dropped.
//
// Input: [options byte][split seed byte][bytes the peer sends...]
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/engine_core.hpp"
#include "ionet/engine.hpp"
#include "tests/null_engine.hpp"

using namespace ionet::detail;

namespace {

[[noreturn]] void fail() { __builtin_trap(); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  if (size < 2) return 0;
  ionet_test::null_engine self;
  ionet::options o;
  o.max_connections = 2;
  o.mode = (data[0] & 1) ? ionet::framing::raw : ionet::framing::length_prefix;
  o.max_message_bytes = 1u + (data[0] >> 2) * 61u;  // 1 .. 3844
  o.max_queued_bytes = o.max_message_bytes * 2 + 8;
  o.slice_bytes = (data[0] & 2) ? 16 : 512;
  o.event_queue_capacity = 1u << 16;
  engine_core* core_ptr = nullptr;
  ionet::connection_id id{};
  if (data[0] & 0x80) {
    // Inline: echo from inside the handler, as servers do.
    o.handler = [&](ionet::engine&, const ionet::event& e) {
      if (e.type == ionet::event_type::message)
        (void)core_ptr->send(e.conn, e.data);
    };
  }
  engine_core core(self, o);
  core_ptr = &core;
  if (!core.init(1).ok()) fail();

  auto opened = core.open_slot(0);
  if (!opened) fail();
  id = *opened;
  const std::uint32_t slot = ionet::detail::slot_of(id);
  event_batch batch;
  core.emit_connected(slot, ionet::endpoint{}, batch);
  core.deliver(batch);

  std::vector<ionet::event> events(64);
  // The user's side of the pull model: echo, then release.
  auto drain_events = [&] {
    for (;;) {
      const std::size_t n = core.poll(events, std::chrono::milliseconds(0));
      if (n == 0) return;
      for (std::size_t i = 0; i < n; ++i) {
        const ionet::event& e = events[i];
        if (e.type == ionet::event_type::message) {
          (void)core.send(e.conn, e.data);
        }
      }
      // No backend to hand a woken connection to: the drain below takes
      // every queue anyway.
      for (std::size_t i = 0; i < n; ++i) (void)core.release_one(events[i]);
    }
  };
  // The backend's side of sending: take what is queued, "write" it.
  auto write_all = [&](bool ok) {
    for (;;) {
      slice_chain chain = core.take_queue(slot).chain;
      if (chain.empty()) return;
      core.write_done(slot, chain, ok);
    }
  };

  std::uint32_t seed = data[1] | 1u;
  std::size_t pos = 2;
  bool closed = false;
  while (pos < size && !closed) {
    seed = seed * 1103515245u + 12345u;
    std::size_t chunk = 1 + (seed >> 16) % 300;
    if (chunk > size - pos) chunk = size - pos;
    const std::error_code ec = core.on_read(
        slot, {reinterpret_cast<const std::byte*>(data + pos), chunk}, batch);
    pos += chunk;
    core.deliver(batch);
    if (ec) {
      if (ec != ionet::errc::message_too_large &&
          ec != ionet::errc::out_of_memory)
        fail();
      core.close_slot(slot, ec, batch);
      core.deliver(batch);
      closed = true;
    }
    drain_events();
    write_all((seed & 0x30000) != 0);  // now and then a write fails
  }
  if (!closed) {
    core.close_slot(slot, ionet::make_error_code(ionet::errc::closed_by_user),
                    batch);
    core.deliver(batch);
  }
  drain_events();
  write_all(false);
  core.backend_done(slot);

  const ionet::engine_stats st = core.stats();
  if (st.pool_slices_in_use != 0) fail();
  if (st.bytes_queued != st.bytes_sent + st.bytes_dropped) fail();
  if (st.accepted != 1 || st.closed != 1) fail();
  // The slot is free again and the old id is dead.
  if (core.resolve(id)) fail();
  auto again = core.open_slot(0);
  if (!again || *again == id) fail();
  return 0;
}
