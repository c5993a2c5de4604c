#include "common/engine_core.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

namespace ionet::detail {
namespace {

// send(): messages of up to this many slices are copied into the queue
// under its lock (8 KiB with 512-byte slices: a few microseconds at most).
constexpr std::uint64_t in_place_slices = 16;

// A connection's queued bytes, read under its lock.
std::uint64_t queued_of(const conn_state& st) noexcept {
  st.lock.lock();
  const std::uint64_t mine = st.queued;
  st.lock.unlock();
  return mine;
}

}  // namespace

engine_core::engine_core(engine& self, const options& opts)
    : opts_(opts), delivery_(self, std::move(opts_.handler)), timeouts_(opts) {}

engine_core::~engine_core() { discard_unpolled(); }

void engine_core::discard_unpolled() noexcept {
  // Events nobody polled: their buffers and holds go back as release()
  // would give them (no connection needs waking: the engine has stopped).
  delivery_.discard([this](const event& e) { give_back(e); });
  if (slices_) {
    for (std::uint32_t i = 0; i < states_.made(); ++i) {
      slices_->give_chain(states_[i].queue);
      states_[i].decoder.reset();
    }
  }
}

status engine_core::init(std::uint32_t default_threads) {
  std::lock_guard g(stats_lock_);
  if (status s = validate(opts_); !s) return s;
  if (opts_.threads == options::backend_default)
    opts_.threads = default_threads;
  std::uint32_t slices = opts_.pool_slices;
  if (slices == 0) {
    // Enough for every connection to hold a few slices, and for one
    // connection to fill its whole queue twice over.
    const std::uint64_t per_queue =
        (std::uint64_t{opts_.max_queued_bytes} + opts_.slice_bytes - 1) /
        opts_.slice_bytes;
    const std::uint64_t want = std::max<std::uint64_t>(
        std::uint64_t{opts_.max_connections} * 8, per_queue * 2);
    slices =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(want, 1u << 22));
  }
  if (states_.reserved()) {
    // A restart keeps the pools and the slot table: generations go on, so
    // an id of the last run never names a connection of this one, and a
    // slot whose closed event the user still holds stays out of use until
    // that event is released. What nobody polled is let go now, and the
    // pull queue, closed by the stop, takes messages again.
    discard_unpolled();
    delivery_.restart();
  } else {
    try {
      states_.reserve(opts_.max_connections);
      table_ = std::make_unique<connection_table>(opts_.max_connections);
      slices_ = std::make_unique<slab_pool>(opts_.slice_bytes, slices);
      delivery_.make(opts_.event_queue_capacity, opts_.max_connections);
      // A block for each engine thread, and for a backend's helper (the
      // IOCP housekeeper); more threads would share the atomic one.
      counters_.reset(opts_.threads + 2);
    } catch (const std::bad_alloc&) {
      states_.reset();
      table_.reset();
      slices_.reset();
      delivery_.reset();
      return {errc::out_of_memory,
              "could not pre-allocate pools for max_connections=" +
                  std::to_string(opts_.max_connections) + " and " +
                  std::to_string(slices) + " slices of " +
                  std::to_string(opts_.slice_bytes) + " bytes"};
    }
  }
  // A restart counts from zero, like a new engine.
  counters_.reset(opts_.threads + 2);
  opened_.store(0, std::memory_order_relaxed);
  closed_.store(0, std::memory_order_relaxed);
  draining_.store(false, std::memory_order_relaxed);
  delivery_.reset_counts();
  pressure_.start(opts_.max_total_queued_bytes
                      ? opts_.max_total_queued_bytes
                      : std::uint64_t{slices} * opts_.slice_bytes / 4 * 3,
                  opts_.max_queued_bytes);
  timeouts_.start();
  low_water_ = opts_.send_low_water.value_or(opts_.max_queued_bytes / 4);
  return {};
}

std::optional<connection_id> engine_core::open_slot(std::uint32_t owner) {
  const auto slot =
      draining_.load(std::memory_order_relaxed) ? std::nullopt : table_->take();
  if (!slot) {
    count_rejected();
    return std::nullopt;
  }
  make_open(*slot, owner);
  opened_.fetch_add(1, std::memory_order_relaxed);
  live_.fetch_add(1, std::memory_order_relaxed);
  return table_->publish(*slot);  // acq_rel: the stores above come first
}

engine_core::outbound engine_core::open_outbound(
    void* context, std::chrono::milliseconds timeout, connection_id beside) {
  if (draining_.load(std::memory_order_relaxed))
    return {{}, make_error_code(errc::not_running)};
  const auto slot = table_->take();
  if (!slot) return {{}, make_error_code(errc::connection_limit)};
  const std::uint32_t owner =
      thread_for(beside, table_->resolve(beside).has_value());
  conn_state& st = make_open(*slot, owner);
  {
    std::lock_guard g(st.lock);
    st.connecting = true;
    st.scheduled = true;  // the backend's until connect_done()
  }
  st.context.store(context, std::memory_order_relaxed);
  st.last_active.store(0, std::memory_order_relaxed);  // no idle_timeout yet
  st.connect_by.store(timeouts_.deadline_in(timeout),
                      std::memory_order_relaxed);
  counters_.add(counter::connects, 1);
  opened_.fetch_add(1, std::memory_order_relaxed);
  live_.fetch_add(1, std::memory_order_relaxed);
  return {table_->publish(*slot), {}};
}

void engine_core::connect_done(std::uint32_t slot, const endpoint& peer,
                               event_batch& out) {
  conn_state& st = states_[slot];
  {
    std::lock_guard g(st.lock);
    st.connecting = false;
  }
  if (st.connect_by.exchange(0, std::memory_order_relaxed) != 0)
    timeouts_.done_deadline();
  st.last_active.store(timeouts_.now(), std::memory_order_relaxed);
  emit_connected(slot, peer, out);
}

conn_state& engine_core::make_open(std::uint32_t slot, std::uint32_t owner) {
  // Made and set up before the id is live, so whatever resolves the new id
  // (a send() to a guessed one included) finds the connection whole, on
  // its owner thread. The old id of the slot never resolves again.
  conn_state& st = states_.make(slot, [this](conn_state& s, std::uint32_t) {
    s.decoder.configure(opts_.mode, opts_.max_message_bytes);
  });
  {
    std::lock_guard g(st.lock);
    st.open = true;
    st.close_requested = false;
    st.reset_requested.store(false, std::memory_order_relaxed);
    st.sending = conn_state::send_side::open;
    st.peer_eof = false;
    st.connecting = false;
    st.scheduled = false;
    st.queued = 0;
    st.owner.store(owner, std::memory_order_relaxed);
  }
  st.context.store(nullptr, std::memory_order_relaxed);
  st.unreleased.store(0, std::memory_order_relaxed);
  st.holds.store(2, std::memory_order_relaxed);
  st.last_active.store(timeouts_.now(), std::memory_order_relaxed);
  st.partial_since.store(0, std::memory_order_relaxed);
  st.write_since.store(0, std::memory_order_relaxed);
  st.connect_by.store(0, std::memory_order_relaxed);
  st.read_paused.store(false, std::memory_order_relaxed);
  return st;
}

void engine_core::cancel_open(std::uint32_t slot) noexcept {
  conn_state& st = states_[slot];
  {
    std::lock_guard g(st.lock);
    st.open = false;
    table_->retire(slot);
  }
  st.holds.store(0, std::memory_order_relaxed);
  st.last_active.store(0, std::memory_order_relaxed);
  opened_.fetch_sub(1, std::memory_order_relaxed);
  live_.fetch_sub(1, std::memory_order_relaxed);
  free_slot(slot);
}

void engine_core::close_slot(std::uint32_t slot, std::error_code reason,
                             event_batch& out) {
  conn_state& st = states_[slot];
  const connection_id id = table_->id_of(slot);
  slice_chain dropped;
  bool writing;
  bool never_opened;
  {
    std::lock_guard g(st.lock);
    st.open = false;
    st.close_requested = false;
    never_opened = st.connecting;
    st.connecting = false;
    dropped = st.queue;
    st.queue = slice_chain{};
    st.queued -= dropped.bytes;
    writing = st.writing_direct;
    if (st.want_writable.exchange(false, std::memory_order_relaxed))
      writable_waiting_.fetch_sub(1, std::memory_order_relaxed);
    // Retired under the lock: a send() that resolved the id before us sees
    // open == false; one after us cannot resolve it at all.
    table_->retire(slot);
  }
  counters_.add(counter::bytes_dropped, dropped.bytes);
  pressure_.unreserve(dropped.bytes);
  slices_->give_chain(dropped);
  st.decoder.reset();
  st.partial_since.store(0, std::memory_order_relaxed);
  st.write_since.store(0, std::memory_order_relaxed);
  st.last_active.store(0, std::memory_order_relaxed);
  if (st.connect_by.exchange(0, std::memory_order_relaxed) != 0)
    timeouts_.done_deadline();
  if (never_opened) counters_.add(counter::connect_failures, 1);
  if (reason == errc::message_too_large) {
    counters_.add(counter::frames_too_large, 1);
  }
  closed_.fetch_add(1, std::memory_order_relaxed);
  event e;
  e.type = event_type::closed;
  e.conn = id;
  e.reason = reason;
  event_access::set_context(e, &st.context);
  out.events.push_back(e);
  // A direct write on another thread: it ends within one non-blocking
  // send, and drops what the socket did not take (send_now).
  while (writing) {
    std::this_thread::yield();
    std::lock_guard g(st.lock);
    writing = st.writing_direct;
  }
}

void engine_core::backend_done(std::uint32_t slot) noexcept {
  live_.fetch_sub(1, std::memory_order_release);
  release_hold(slot);
}

void engine_core::drop_user_hold(std::uint32_t slot) noexcept {
  release_hold(slot);
}

void engine_core::release_hold(std::uint32_t slot) noexcept {
  if (states_[slot].holds.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    free_slot(slot);
  }
}

void engine_core::free_slot(std::uint32_t slot) noexcept {
  conn_state& st = states_[slot];
  st.context.store(nullptr, std::memory_order_relaxed);
  table_->free(slot);
}

engine_core::queued_result engine_core::send(connection_id id,
                                             std::span<const std::byte> bytes,
                                             const direct_write* now) {
  if (opts_.mode == framing::length_prefix &&
      bytes.size() > opts_.max_message_bytes) {
    return {make_error_code(errc::message_too_large)};
  }
  const auto slot = table_->resolve(id);
  if (!slot) {
    counters_.add(counter::send_stale, 1);
    return {make_error_code(errc::stale_connection)};
  }
  const std::uint64_t total =
      bytes.size() + (opts_.mode == framing::length_prefix ? header_bytes : 0);
  if (total > opts_.max_queued_bytes) {
    // Raw mode (a length_prefix frame always fits): more than a whole
    // queue can never be queued, however long the caller waits.
    return {make_error_code(errc::message_too_large)};
  }
  if (total == 0) return {};
  // The engine-wide cap: reserved before the copy, returned on failure.
  if (!pressure_.reserve(total)) {
    counters_.add(counter::send_queue_full, 1);
    owe_writable(*slot, id);
    return {make_error_code(errc::queue_full)};
  }
  // A message of up to in_place_slices slices is copied straight into
  // the queue under the lock, behind the bytes already there: messages
  // share slices, so the pool fills no faster than the byte caps count,
  // and a gathered write has fewer pieces. A larger one is copied outside
  // the lock, so concurrent senders serialise only on the append, into
  // slices of its own (the room it leaves is under one slice in
  // in_place_slices).
  const bool small =
      total <= std::uint64_t{opts_.slice_bytes} * in_place_slices;
  slice_chain chain;
  if (!small) {
    if (auto ec = encode_to_slices(*slices_, opts_.mode, bytes, chain)) {
      pressure_.unreserve(total);
      if (ec == errc::pool_exhausted) {
        counters_.add(counter::send_pool_exhausted, 1);
        owe_writable(*slot, id);
      }
      return {ec};
    }
  }
  // A direct write, unless more replies to this connection are coming: a
  // later message of the batch the inline handler is being given, or
  // (pull model) more of its messages in the user's hands. Those replies
  // are gathered into one write by the connection's thread instead.
  conn_state& st = states_[*slot];
  if (now && (id == more_follow ||
              st.unreleased.load(std::memory_order_relaxed) > 1)) {
    now = nullptr;
  }
  // A direct write's slices, for what the socket may not take.
  slice_chain spare;
  if (now && small) {
    const auto need = static_cast<std::uint32_t>(
        (total + opts_.slice_bytes - 1) / opts_.slice_bytes);
    if (!slices_->take_chain(need, spare)) spare = slice_chain{};
  }
  std::error_code ec;
  bool wake = false;
  bool direct = false;
  {
    std::lock_guard g(st.lock);
    if (!st.open || !table_->resolve(id)) {
      ec = make_error_code(st.close_requested && table_->resolve(id)
                               ? errc::closing
                               : errc::stale_connection);
    } else if (st.sending != conn_state::send_side::open) {
      ec = make_error_code(errc::closing);  // shutdown_send() was called
    } else if (st.queued + total > opts_.max_queued_bytes) {
      ec = make_error_code(errc::queue_full);
      owe_writable_locked(st);
    } else if (!spare.empty() && st.queue.empty() && !st.scheduled) {
      // Nothing queued or being written: claimed below (scheduled), so no
      // flush starts and senders on other threads queue behind us while
      // send_now writes.
      direct = true;
      st.writing_direct = true;
    } else if (small) {
      ec = append_in_place(*slices_, opts_.mode, bytes, st.queue);
      // (`ec &&` first: comparing a clear code with an errc still builds
      // one, a call into error_category() per message.)
      if (ec && ec == errc::pool_exhausted) owe_writable_locked(st);
    } else {
      slices_->append(st.queue, chain);
    }
    if (!ec) {
      st.queued += total;
      wake = !st.scheduled;
      st.scheduled = true;
    }
  }
  if (direct) return send_now(*slot, bytes, total, spare, *now);
  slices_->give_chain(spare);
  if (ec) {
    if (ec == errc::queue_full) counters_.add(counter::send_queue_full, 1);
    if (ec == errc::pool_exhausted) {
      counters_.add(counter::send_pool_exhausted, 1);
    }
    if (ec == errc::stale_connection) counters_.add(counter::send_stale, 1);
    pressure_.unreserve(total);
    slices_->give_chain(chain);
    return {ec};
  }
  counters::block* const mine = counters_.local();
  counters_.add(mine, counter::messages_sent, 1);
  counters_.add(mine, counter::bytes_queued, total);
  return {{}, wake};
}

engine_core::queued_result engine_core::send_now(
    std::uint32_t slot, std::span<const std::byte> bytes, std::uint64_t total,
    slice_chain& spare, const direct_write& now) {
  std::byte header[header_bytes];
  std::span<const std::byte> head;
  if (opts_.mode == framing::length_prefix) {
    put_header(header, static_cast<std::uint32_t>(bytes.size()));
    head = header;
  }
  const std::size_t sent = now.fn(now.backend, slot, head, bytes);
  // What the socket did not take goes into the spare slices, to be
  // written as any queued bytes are; the slices it does not need go back.
  slice_chain rest;
  if (const std::uint64_t left = total - sent) {
    const std::uint32_t unit = opts_.slice_bytes;
    rest = slices_->split_front(
        spare, static_cast<std::uint32_t>((left + unit - 1) / unit));
    std::uint32_t at = rest.head;  // taken slices: their lengths are 0
    std::size_t room = unit;
    const std::size_t skip = std::min<std::size_t>(sent, head.size());
    copy_on(*slices_, at, room, head.data() + skip, head.size() - skip);
    copy_on(*slices_, at, room, bytes.data() + (sent - skip),
            bytes.size() - (sent - skip));
    rest.bytes = left;
  }
  slices_->give_chain(spare);
  conn_state& st = states_[slot];
  bool wake = false;
  slice_chain dropped;
  {
    std::lock_guard g(st.lock);
    st.writing_direct = false;
    if (!st.open && !st.close_requested) {
      // close_slot() ran meanwhile (on the connection's thread; close()
      // would have left close_requested): the rest goes the way of the
      // queue it dropped.
      st.queued -= total;
      dropped = rest;
    } else {
      st.queued -= sent;
      // In front of whatever other threads queued meanwhile.
      slices_->append(rest, st.queue);
      st.queue = rest;
      // The claim is let go unless there is something for the owner to
      // do: bytes to write, or a close to make once they are out.
      wake = !st.queue.empty() || st.close_requested || st.peer_eof ||
             st.sending == conn_state::send_side::closing;
      if (!wake) st.scheduled = false;
    }
  }
  pressure_.unreserve(sent + dropped.bytes);
  counters::block* const mine = counters_.local();
  if (!dropped.empty()) {
    counters_.add(mine, counter::bytes_dropped, dropped.bytes);
    slices_->give_chain(dropped);
  }
  counters_.add(mine, counter::messages_sent, 1);
  counters_.add(mine, counter::bytes_queued, total);
  if (sent) {
    counters_.add(mine, counter::bytes_sent, sent);
    st.last_active.store(timeouts_.now(), std::memory_order_relaxed);
  }
  return {{}, wake};
}

engine_core::queued_result engine_core::request_close(connection_id id,
                                                      close_mode mode) {
  const auto slot = table_->resolve(id);
  if (!slot) return {make_error_code(errc::stale_connection)};
  conn_state& st = states_[*slot];
  std::lock_guard g(st.lock);
  if (!table_->resolve(id)) return {make_error_code(errc::stale_connection)};
  const bool reset = mode == close_mode::reset;
  if (!st.open) {
    if (!st.close_requested) return {make_error_code(errc::stale_connection)};
    // A graceful close still sending may be cut short; nothing else.
    if (!reset || st.reset_requested.load(std::memory_order_relaxed))
      return {make_error_code(errc::closing)};
  }
  st.open = false;
  st.close_requested = true;
  if (reset) {
    // The owner thread is told even when a write of the connection is in
    // flight (scheduled): that write may never complete, to a peer that
    // does not read, and the reset must not wait for it.
    st.reset_requested.store(true, std::memory_order_relaxed);
    st.scheduled = true;
    return {{}, true};
  }
  const bool wake = !st.scheduled;
  st.scheduled = true;
  return {{}, wake};
}

engine_core::queued_result engine_core::request_shutdown_send(
    connection_id id) {
  const auto slot = table_->resolve(id);
  if (!slot) return {make_error_code(errc::stale_connection)};
  conn_state& st = states_[*slot];
  std::lock_guard g(st.lock);
  if (!table_->resolve(id)) return {make_error_code(errc::stale_connection)};
  if (!st.open || st.sending != conn_state::send_side::open) {
    return {make_error_code(st.open || st.close_requested
                                ? errc::closing
                                : errc::stale_connection)};
  }
  st.sending = conn_state::send_side::closing;
  const bool wake = !st.scheduled;
  st.scheduled = true;
  return {{}, wake};
}

std::error_code engine_core::set_context(connection_id id, void* context) {
  auto s = table_->resolve(id);
  if (!s) return make_error_code(errc::stale_connection);
  // Checked again and stored under the slot's lock, which close_slot
  // retires the id under: a store after the check could otherwise land on
  // the next connection in the slot, should this one close and the slot be
  // reused in between.
  conn_state& st = states_[*s];
  std::lock_guard g(st.lock);
  if (!table_->resolve(id)) return make_error_code(errc::stale_connection);
  st.context.store(context, std::memory_order_release);
  return {};
}

std::optional<std::uint64_t> engine_core::queued_bytes(connection_id id) const {
  return while_live(id, [this](std::uint32_t slot) {
    return states_[slot].queued;  // under its lock
  });
}

void engine_core::owe_writable_locked(conn_state& st) noexcept {
  if (!st.want_writable.exchange(true, std::memory_order_relaxed))
    writable_waiting_.fetch_add(1, std::memory_order_relaxed);
}

void engine_core::owe_writable(std::uint32_t slot, connection_id id) noexcept {
  conn_state& st = states_[slot];
  std::lock_guard g(st.lock);
  if (st.open && table_->resolve(id)) owe_writable_locked(st);
}

void engine_core::emit_writable(std::uint32_t slot, event_batch& out) {
  if (!pressure_.has_room()) return;  // the sweep looks again
  conn_state& st = states_[slot];
  {
    std::lock_guard g(st.lock);
    // A connection being closed is owed nothing: close_slot() lets go.
    if (!st.open || st.queued > low_water_ ||
        !st.want_writable.load(std::memory_order_relaxed)) {
      return;
    }
    st.want_writable.store(false, std::memory_order_relaxed);
  }
  writable_waiting_.fetch_sub(1, std::memory_order_relaxed);
  event e;
  e.type = event_type::writable;
  e.conn = table_->id_of(slot);
  event_access::set_context(e, &st.context);
  out.events.push_back(e);
}

engine_core::taken engine_core::take_queue(std::uint32_t slot) {
  conn_state& st = states_[slot];
  std::lock_guard g(st.lock);
  taken t{st.queue, {}};
  const slice_chain& chain = t.chain;
  st.queue = slice_chain{};
  if (!chain.empty() && st.write_since.load(std::memory_order_relaxed) == 0) {
    st.write_since.store(timeouts_.now(), std::memory_order_relaxed);
  }
  if (chain.empty()) {
    st.scheduled = false;
    st.write_since.store(0, std::memory_order_relaxed);
    if (st.close_requested) {
      // Asked by the user, or by shutdown() (then every close from here
      // on is the engine's, a user's close() that was still flushing too).
      t.close_now = make_error_code(draining_.load(std::memory_order_relaxed)
                                        ? errc::engine_stopped
                                        : errc::closed_by_user);
    } else {
      if (st.sending == conn_state::send_side::closing) {
        st.sending = conn_state::send_side::shut;
        t.shut_send = true;
      }
      if (st.peer_eof && st.unreleased.load(std::memory_order_acquire) == 0)
        t.close_now = make_error_code(errc::peer_closed);
    }
  }
  return t;
}

bool engine_core::on_peer_eof(std::uint32_t slot) {
  conn_state& st = states_[slot];
  std::lock_guard g(st.lock);
  st.peer_eof = true;
  return !st.scheduled && st.queue.empty() &&
         st.unreleased.load(std::memory_order_acquire) == 0;
}

bool engine_core::message_released(const event& e) noexcept {
  // Only count for the connection the event came from: if its slot has
  // been reused (generation moved on by two), the event is old news.
  const std::uint32_t slot = slot_of(e.conn);
  const std::uint32_t gen_now = generation_of(table_->id_of(slot));
  if (gen_now != generation_of(e.conn) && gen_now != generation_of(e.conn) + 1)
    return false;
  conn_state& st = states_[slot];
  if (st.unreleased.fetch_sub(1, std::memory_order_acq_rel) != 1) return false;
  std::lock_guard g(st.lock);
  if (st.peer_eof && st.open && !st.scheduled) {
    st.scheduled = true;
    return true;
  }
  return false;
}

void engine_core::write_done(std::uint32_t slot, slice_chain& chain,
                             bool sent) noexcept {
  conn_state& st = states_[slot];
  {
    std::lock_guard g(st.lock);
    st.queued -= chain.bytes;
  }
  if (sent && chain.bytes) {
    // Progress: the write timeout counts from here while more is queued.
    const std::uint32_t now = timeouts_.now();
    st.last_active.store(now, std::memory_order_relaxed);
    if (st.write_since.load(std::memory_order_relaxed) != 0) {
      st.write_since.store(now, std::memory_order_relaxed);
    }
  }
  pressure_.unreserve(chain.bytes);
  counters_.add(sent ? counter::bytes_sent : counter::bytes_dropped,
                chain.bytes);
  slices_->give_chain(chain);
}

std::error_code engine_core::on_read(std::uint32_t slot,
                                     std::span<const std::byte> bytes,
                                     event_batch& out) {
  counters_.add(counter::bytes_received, bytes.size());
  conn_state& st = states_[slot];
  const std::uint32_t now = timeouts_.now();
  st.last_active.store(now, std::memory_order_relaxed);
  const connection_id id = table_->id_of(slot);
  std::size_t completed = 0;
  // Pull model: the messages lying whole in this read must outlive it.
  // They are copied at once into one buffer they share, [lo, hi) of the
  // read with the headers between them (one pool buffer and one copy per
  // read, not per message); one assembled across reads has its own.
  const bool keep = !inline_mode();  // the pull model
  const std::size_t first = out.events.size();
  const std::byte* lo = nullptr;
  const std::byte* hi = nullptr;
  std::uint32_t viewed = 0;
  message_pool& messages = delivery_.messages();
  auto ec = st.decoder.feed(bytes, messages, [&](decoded_message&& m) {
    ++completed;
    event e;
    e.type = event_type::message;
    e.conn = id;
    event_access::set_context(e, &st.context);
    e.data = m.bytes;
    event_access::set_owner(e, m.owned);
    if (keep && !m.owned) {
      if (!lo) lo = m.bytes.data();
      hi = m.bytes.data() + m.bytes.size();
      ++viewed;
    }
    out.events.push_back(e);
  });
  std::error_code copy_failed;
  std::size_t delivered = completed;  // less any that could not be kept
  if (viewed) {
    const auto span = static_cast<std::uint32_t>(hi - lo);
    msg_buffer* b = messages.take(span);
    auto from = out.events.begin() + static_cast<std::ptrdiff_t>(first);
    if (b) {
      std::memcpy(b->data(), lo, span);
      b->refs.store(viewed, std::memory_order_relaxed);
      for (auto it = from; it != out.events.end(); ++it) {
        if (event_access::owner(*it)) continue;
        it->data = {b->data() + (it->data.data() - lo), it->data.size()};
        event_access::set_owner(*it, b);
      }
    } else {
      // No memory: those messages are lost, and the connection closes.
      copy_failed = make_error_code(errc::out_of_memory);
      out.events.erase(
          std::remove_if(
              from, out.events.end(),
              [](const event& e) { return event_access::owner(e) == nullptr; }),
          out.events.end());
      delivered -= viewed;
    }
  }
  if (delivered) {
    counters_.add(counter::messages_received, delivered);
    // Before the events reach the user (deliver() comes later).
    if (keep)
      st.unreleased.fetch_add(static_cast<std::uint32_t>(delivered),
                              std::memory_order_relaxed);
  }
  // A message left partial starts the read timeout; completing it stops
  // it. The partial one is new when this read completed any (a stream of
  // large messages is rarely read on a boundary, and is not slow).
  if (!st.decoder.partial()) {
    st.partial_since.store(0, std::memory_order_relaxed);
  } else if (completed > 0 ||
             st.partial_since.load(std::memory_order_relaxed) == 0) {
    st.partial_since.store(now, std::memory_order_relaxed);
  }
  return ec ? ec : copy_failed;
}

void engine_core::emit_connected(std::uint32_t slot, const endpoint& peer,
                                 event_batch& out) {
  event e;
  e.type = event_type::connected;
  e.conn = table_->id_of(slot);
  e.peer = peer;
  event_access::set_context(e, &states_[slot].context);
  out.events.push_back(e);
}

void engine_core::deliver(event_batch& batch) {
  delivery_.deliver(batch, [this](const event& e) { give_back(e); });
}

void engine_core::push_task(connection_id id, std::unique_ptr<task_node> node) {
  event e;
  e.type = event_type::task;
  e.conn = id;
  event_access::set_owner(e, node.release());
  delivery_.push_task(e, [this](const event& ev) { give_back(ev); });
}

bool engine_core::release_one(const event& e) noexcept {
  if (e.type == event_type::task) {
    delete static_cast<task_node*>(event_access::owner(e));
    return false;
  }
  if (e.type == event_type::message) {
    delivery_.messages().drop(static_cast<msg_buffer*>(event_access::owner(e)));
    return message_released(e);
  }
  if (e.type == event_type::closed) drop_user_hold(slot_of(e.conn));
  return false;
}

bool engine_core::should_pause_reading(std::uint32_t slot) noexcept {
  conn_state& st = states_[slot];
  const std::uint64_t mine = queued_of(st);
  const bool backed_up = delivery_.backed_up(slot);
  const bool pause = pressure_.should_pause(mine, backed_up, [this] {
    const std::uint64_t closed = closed_.load(std::memory_order_relaxed);
    const std::uint64_t accepted = opened_.load(std::memory_order_relaxed);
    return accepted > closed ? accepted - closed : 1;
  });
  if (pause) {
    st.read_paused.store(true, std::memory_order_relaxed);
    counters_.add(counter::read_pauses, 1);
  }
  return pause;
}

bool engine_core::may_resume_reading(std::uint32_t slot) noexcept {
  conn_state& st = states_[slot];
  const bool backed_up = delivery_.backed_up(slot);
  if (!pressure_.may_resume(backed_up, [&st] { return queued_of(st); }))
    return false;
  st.read_paused.store(false, std::memory_order_relaxed);
  if (st.partial_since.load(std::memory_order_relaxed) != 0) {
    st.partial_since.store(timeouts_.now(), std::memory_order_relaxed);
  }
  return true;
}

engine_stats engine_core::stats() const {
  std::lock_guard g(stats_lock_);
  engine_stats s;
  auto get = [](const std::atomic<std::uint64_t>& a) {
    return a.load(std::memory_order_relaxed);
  };
  if (states_.reserved()) s.threads = opts_.threads;  // resolved by init()
  // Closed first: a connection is counted closed only after it was counted
  // accepted, so a reader stalled between the two loads sees accepted ahead
  // (the clamp covers what relaxed loads do not promise).
  s.closed = get(closed_);
  const std::uint64_t opened = get(opened_);  // inbound and outbound
  s.connections_open = opened > s.closed ? opened - s.closed : 0;
  s.connects = counters_.sum(counter::connects);
  s.connect_failures = counters_.sum(counter::connect_failures);
  s.accepted = opened > s.connects ? opened - s.connects : 0;
  s.rejected = counters_.sum(counter::rejected);
  s.bytes_received = counters_.sum(counter::bytes_received);
  s.bytes_sent = counters_.sum(counter::bytes_sent);
  s.messages_received = counters_.sum(counter::messages_received);
  s.messages_sent = counters_.sum(counter::messages_sent);
  s.bytes_queued = counters_.sum(counter::bytes_queued);
  s.bytes_dropped = counters_.sum(counter::bytes_dropped);
  s.send_stale = counters_.sum(counter::send_stale);
  s.send_queue_full = counters_.sum(counter::send_queue_full);
  s.send_pool_exhausted = counters_.sum(counter::send_pool_exhausted);
  s.read_pauses = counters_.sum(counter::read_pauses);
  s.frames_too_large = counters_.sum(counter::frames_too_large);
  if (slices_) {
    s.pool_slices_total = slices_->capacity();
    s.pool_slices_in_use = slices_->in_use();
  }
  s.events_pending = delivery_.pending();
  // The message pool's heap allocations: buffers for messages that must
  // outlive their read (pull model, or split across reads), cached once
  // made. Nothing else is counted here: the IOCP accept pool's growth only
  // posts accepts on more of the entries made at start (their sockets are
  // the system's, not our heap), and a backend's own bookkeeping is
  // reserved at start.
  s.allocations_after_start = delivery_.allocations_after_start();
  return s;
}

}  // namespace ionet::detail
