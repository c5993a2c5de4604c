#include "common/completion.hpp"

namespace ionet::detail {

engine_core::taken next_send(engine_core& core, conn_protocol& c,
                             std::uint32_t max_slices, event_batch& out) {
  if (!c.active()) return {};
  if (core.reset_requested(c.slot))
    return {{}, make_error_code(errc::closed_by_user), true};
  if (c.state == phase::connecting) return {};  // connect_done() flushes
  core.check_writable(c.slot, out);
  if (c.writing) return {};
  if (c.backlog.empty()) {
    engine_core::taken t = core.take_queue(c.slot);
    c.backlog = t.chain;
    if (c.backlog.empty()) {
      // Our FIN goes before the peer's: this side holds TIME_WAIT.
      if (t.shut_send) c.fin_first = true;
      return t;
    }
  }
  return {core.slices().split_front(c.backlog, max_slices), {}};
}

void requeue_send(engine_core& core, conn_protocol& c,
                  slice_chain& chain) noexcept {
  core.slices().append(chain, c.backlog);
  c.backlog = chain;
  chain = slice_chain{};
}

bool connect_done(engine_core& core, conn_protocol& c, const endpoint& peer,
                  event_batch& out) {
  if (c.state != phase::connecting) return false;
  c.state = phase::open;
  core.connect_done(c.slot, peer, out);
  return true;
}

bool start_close(engine_core& core, conn_protocol& c, std::error_code reason,
                 bool graceful, event_batch& out) {
  if (!c.active()) return false;
  // A connection that never opened has nothing to say goodbye to.
  if (c.state == phase::connecting) graceful = false;
  core.close_slot(c.slot, reason, out);
  core.write_done(c.slot, c.backlog, false);  // taken but never sent: dropped
  c.backlog = slice_chain{};
  c.state = phase::draining;
  if (!graceful) c.abortive = true;
  return true;
}

bool on_peer_eof(engine_core& core, conn_protocol& c) {
  c.eof = true;
  if (c.state == phase::lingering) {
    c.state = phase::draining;  // the peer's FIN after ours: done
    return false;
  }
  return c.state == phase::open && core.on_peer_eof(c.slot);
}

abrupt end_abruptly(conn_protocol& c) noexcept {
  if (c.active()) return abrupt::close;
  if (c.state != phase::lingering) return abrupt::nothing;
  c.state = phase::draining;
  c.abortive = true;
  return abrupt::stop_waiting;
}

bool linger_expired(conn_protocol& c, std::uint64_t now_ms) noexcept {
  if (c.state != phase::lingering || now_ms < c.deadline_ms) return false;
  c.state = phase::draining;
  c.abortive = true;
  return true;
}

}  // namespace ionet::detail
