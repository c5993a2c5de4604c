// One connection slot's state, which engine_core keeps per slot and the
// timeouts check (its stamps). Which thread may touch a field is marked on
// it.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/framing.hpp"
#include "common/slab_pool.hpp"
#include "common/spin_lock.hpp"

namespace ionet::detail {

// Per-slot state shared between the owning engine thread and send()/close()
// callers on any thread. Fields marked [lock] are guarded by `lock`;
// [owner] ones are touched only by the engine thread serving the slot.
struct conn_state {
  mutable spin_lock lock;  // mutable: const readers take it too
  std::atomic<void*> context{nullptr};
  slice_chain queue;             // [lock] encoded, not yet handed to the OS
  std::uint64_t queued = 0;      // [lock] bytes queued or being written
  bool open = false;             // [lock] send() accepted
  bool close_requested = false;  // [lock] close() called: flush, then close
  // [lock] written, read anywhere for a cheap look: close(reset) was
  // called: close abortively, now, whatever is queued or being written.
  std::atomic<bool> reset_requested{false};
  bool scheduled = false;  // [lock] backend has been told (or is writing)
  bool peer_eof = false;   // [lock] the peer shut down its side
  // [lock] An outbound connection not yet open (engine::connect()):
  // sends queue behind `scheduled`, set meanwhile, until it opens.
  bool connecting = false;
  // [lock] Our sending side: shutdown_send() closes it (no more sends) and
  // shuts it once the queue is out (our FIN).
  enum class send_side : std::uint8_t { open, closing, shut };
  send_side sending = send_side::open;
  // [lock] A direct write (engine_core::send_now) is in the socket, on
  // whichever thread sent: close_slot() waits for it to end, so that the
  // backend, which closes the socket next, never closes it under a write
  // (nor lets its descriptor be reused for another connection's).
  bool writing_direct = false;
  // [lock] written, read anywhere for a cheap look: send() refused a frame
  // (queue_full, pool_exhausted) and the writable event is owed.
  std::atomic<bool> want_writable{false};
  // Message events handed to the user and not yet released. After the
  // peer's EOF the connection closes only when this reaches zero, so
  // replies to the last messages still go out.
  std::atomic<std::uint32_t> unreleased{0};
  std::atomic<std::uint32_t> owner{0};  // engine thread index
  // Holds that keep the slot from reuse: the backend's (until its socket
  // and every operation on it are finished) and the closed event's (until
  // the user has seen it). The slot is freed when both are gone.
  std::atomic<std::uint32_t> holds{0};
  frame_decoder decoder;  // [owner]
  // For the timeouts, in the core's coarse milliseconds (0: not set):
  // when a byte last moved either way, since when a message has been
  // partly received, since when a queued write has made no progress.
  std::atomic<std::uint32_t> last_active{0};
  std::atomic<std::uint32_t> partial_since{0};
  std::atomic<std::uint32_t> write_since{0};
  // Connecting: when to give up (connect_timeout; 0: no deadline).
  std::atomic<std::uint32_t> connect_by{0};
  // [owner] written: the backend stopped reading it (should_pause_reading);
  // read_timeout does not run meanwhile.
  std::atomic<bool> read_paused{false};
};

}  // namespace ionet::detail
