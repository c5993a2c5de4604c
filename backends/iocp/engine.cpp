// The IOCP backend's engine: start and stop, the workers that drain the
// completion port, the housekeeper (accept pool growth, linger deadlines,
// retries) and the user-facing calls. The accept pool is in
// accept_pool.cpp, per-connection I/O in connection.cpp.
#include "backends/iocp/engine.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

namespace ionet::iocp {
namespace {

// Completions taken from the port per call.
constexpr ULONG completion_batch = 64;
// How often the housekeeper looks at the listener and at deadlines; the
// timeouts are swept less often (they are seconds long).
constexpr DWORD housekeeping_ms = 50;
constexpr std::uint64_t sweep_ms = 1000;  // every slot is looked at

void lock(connection& c) { AcquireSRWLockExclusive(&c.lock); }
void unlock(connection& c) { ReleaseSRWLockExclusive(&c.lock); }

void no_completion(engine_impl&, operation&, const completion&) {}

}  // namespace

engine_impl::engine_impl(const options& opts) : engine_base(opts) {
  posted_op_.kind = op_kind::posted;
  posted_op_.complete = &engine_impl::on_posted;
  quit_op_.kind = op_kind::posted;
  quit_op_.complete = &no_completion;
  conn_tasks_op_.kind = op_kind::posted;
  conn_tasks_op_.complete = &engine_impl::on_conn_tasks;
}

engine_impl::~engine_impl() { stop(); }

status engine_impl::start() {
  std::lock_guard g(stop_lock_);
  if (gate_.running()) return {errc::already_running, "start() called twice"};
  endpoint ep;
  if (status s = detail::validate(core_.opts(), &ep); !s) return s;
  if (auto ec = winsock_init()) return {ec, "WSAStartup"};
  // The seed's 2 workers per CPU: the kernel lets as many run at once as
  // there are CPUs; the others stand by for when one blocks.
  if (status s =
          core_.init(2 * std::max(1u, std::thread::hardware_concurrency()));
      !s) {
    return s;
  }
  workers_wanted_ = core_.opts().threads;
  closed_all_ = false;
  ops_ = 0;
  read_slices_ = 0;
  read_budget_ = std::max<std::uint32_t>(1, core_.slices().capacity() / 4);
  // A restart counts from zero, like a new engine.
  for (std::atomic<std::uint64_t>* c :
       {&accepts_pending_, &accept_growths_, &accept_failures_,
        &sockets_created_, &sockets_reused_, &stale_completions_}) {
    c->store(0, std::memory_order_relaxed);
  }

  status s;
  port_ = 0;
  if (auto ec = cport_.open(0)) s = status{ec, "CreateIoCompletionPort"};
  if (s.ok()) s = core_.opts().listen ? open_listener(ep) : open_provider();
  if (s.ok()) {
    if (auto ec = make_pool()) {
      s = status{errc::out_of_memory, "accept pool: " + ec.message()};
    }
  }
  if (s.ok()) {
    housekeeper_wake_ = CreateEventW(nullptr, FALSE, FALSE, nullptr);
    if (!housekeeper_wake_) s = status{errc::out_of_memory, "CreateEvent"};
  }
  if (!s.ok()) {
    release_resources();  // nothing was posted nor started yet
    return s;
  }

  gate_.open();
  try {
    for (std::uint32_t i = 0; i < workers_wanted_; ++i) {
      workers_.emplace_back([this] { worker_main(); });
    }
    housekeeper_ = std::thread([this] { housekeeper_main(); });
  } catch (const std::system_error& ex) {
    s = status{errc::out_of_memory,
               std::string("starting threads: ") + ex.what()};
  }
  if (s.ok()) {
    // The first accept_depth accepts, posted before any client arrives.
    // Counted as posted, not as pending now: their completions may have
    // come already (failed ones, if the network is down).
    if (listen_ != INVALID_SOCKET && top_up_accepts() == 0) {
      s = status{errc::out_of_memory,
                 "could not post any AcceptEx (sockets: " +
                     std::to_string(sockets_created_.load()) + ")"};
    }
  }
  if (!s.ok()) stop_locked();
  return s;
}

void engine_impl::worker_main() {
  const detail::engine_thread mark(this, core_.thread_counters());
  (void)detail::thread_batch();  // its reserve is made now, not after start
  OVERLAPPED_ENTRY batch[completion_batch];
  for (bool quit = false; !quit;) {
    const std::size_t n = cport_.get_many(batch, INFINITE);
    for (std::size_t i = 0; i < n; ++i) {
      auto* op = reinterpret_cast<operation*>(batch[i].lpOverlapped);
      if (op == &quit_op_) {
        // Passed on, so that each worker sees it whatever batches the port
        // hands out (one batch may hold several packets).
        if (!quit) post_quit();
        quit = true;
        continue;
      }
      completion c;
      c.bytes = batch[i].dwNumberOfBytesTransferred;
      c.key = batch[i].lpCompletionKey;
      // Internal holds the NTSTATUS; anything but success is asked for
      // its Winsock error (posted packets never touch it).
      if (op->kind != op_kind::posted && op->ov.Internal != 0) {
        DWORD bytes = 0;
        c.error = overlapped_result(op->socket, &op->ov, bytes);
      }
      op->complete(*this, *op, c);
    }
  }
}

void engine_impl::housekeeper_main() {
  // It runs handlers too (closes on a timeout, stop's close_all).
  const detail::engine_thread mark(this, core_.thread_counters());
  HANDLE handles[2] = {housekeeper_wake_, accept_event_};
  (void)detail::thread_batch();
  std::vector<std::uint32_t> watched;
  watched.reserve(core_.opts().max_connections);  // swapped with watch_list_
  std::uint64_t next_sweep = 0;
  // It runs the timers too: its wait ends at the earliest deadline
  // (rounded up to the millisecond) when that comes before the round.
  auto next_timer = detail::timer_heap::none;
  for (;;) {
    DWORD wait = accept_retry_wait(housekeeping_ms);
    if (next_timer != detail::timer_heap::none) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(
          next_timer - detail::timer_heap::clock::now());
      wait =
          static_cast<DWORD>(std::clamp<std::int64_t>(left.count(), 0, wait));
    }
    // The listener's event only while accepting: once the stop begins
    // nobody resets it (check_listener() no longer runs), and a connect
    // that arrives then would leave it signalled, making every wait return
    // at once.
    const bool listening = accept_event_ != WSA_INVALID_EVENT;
    WaitForMultipleObjects(gate_.stopping() || !listening ? 1 : 2, handles,
                           FALSE, wait);
    if (!gate_.running()) break;
    if (gate_.stopping()) {
      // Every connection is closed from here, an engine thread (so inline
      // handlers see their closed events where they see the rest), while
      // stop() waits for the operations to drain.
      if (!closed_all_.load()) {
        close_all();
        closed_all_.store(true);
      }
      // Connects whose begin packet the port refused (begin_connect) are
      // still counted in ops_: each begins now, and closes at once
      // (engine_stopped). The rest of the list is close_all()'s.
      {
        std::lock_guard g(watch_lock_);
        watched.swap(watch_list_);
        for (std::uint32_t slot : watched) conns_[slot].watched = false;
      }
      for (std::uint32_t slot : watched) {
        connection& c = conns_[slot];
        lock(c);
        if (c.begin_pending) housekeep_connection(c, GetTickCount64());
        core_.deliver(detail::thread_batch());
        unlock(c);
      }
      watched.clear();
      continue;
    }
    next_timer = fire_timers();
    spare_tasks_.run(false);
    core_.deliver(detail::thread_batch());
    check_listener();
    top_up_accepts();
    core_.tick();
    const std::uint64_t now_ms = GetTickCount64();
    // Connect deadlines are looked at every round while a connect is
    // under way (options::connect_timeout is often short); the rest of the
    // sweep once a second.
    if ((core_.timeouts_on() || core_.writable_waiting()) &&
        (now_ms >= next_sweep ||
         connects_in_flight_.load(std::memory_order_relaxed) > 0)) {
      sweep_connections();
      next_sweep = now_ms + sweep_ms;
    }
    {
      std::lock_guard g(watch_lock_);
      watched.swap(watch_list_);
      for (std::uint32_t slot : watched) conns_[slot].watched = false;
    }
    const std::uint64_t now = GetTickCount64();
    for (std::uint32_t slot : watched) {
      connection& c = conns_[slot];
      lock(c);
      housekeep_connection(c, now);
      c.tasks.run(false);  // their packet was refused
      core_.deliver(detail::thread_batch());
      unlock(c);
    }
    watched.clear();
  }
}

void engine_impl::sweep_connections() {
  const std::uint32_t n = core_.slots_made();
  for (std::uint32_t slot = 0; slot < n; ++slot) {
    // A cheap look first (atomics); the lock only for the few that expired
    // or are owed a writable event.
    if (!core_.expired(slot) && !core_.writable_owed(slot)) continue;
    connection& c = conns_[slot];
    lock(c);
    if (c.p.active()) {  // open, or connecting (its connect deadline)
      if (const std::error_code ec = core_.expired(slot)) {
        begin_close(c, ec, detail::graceful_after(ec));
      } else {
        core_.check_writable(slot, detail::thread_batch());
      }
    }
    core_.deliver(detail::thread_batch());
    unlock(c);
  }
}

void engine_impl::hand_off(connection_id id) {
  op_started();
  if (!cport_.post(static_cast<ULONG_PTR>(id), &posted_op_.ov)) {
    // The port could not queue it (out of memory): the housekeeper
    // flushes the connection instead, so the queued bytes are not
    // stranded. Woken now rather than on its next round: until that flush
    // the connection sends nothing, and a sender that keeps its queue
    // full would wait up to housekeeping_ms after each such failure.
    op_finished();
    watch(detail::slot_of(id));
    SetEvent(housekeeper_wake_);
  }
}

status engine_impl::open_provider() {
  // An engine that does not listen (options::listen): the extension
  // functions (ConnectEx) and the provider's nature come from a socket
  // made only to ask.
  const SOCKET probe = open_tcp_socket(AF_INET);
  if (probe == INVALID_SOCKET)
    return {wsa_error(WSAGetLastError()), "socket() for the provider"};
  status s = load_provider(probe);
  closesocket(probe);
  return s;
}

engine_stats engine_impl::stats() const {
  engine_stats s = core_.stats();
  auto get = [](const std::atomic<std::uint64_t>& a) {
    return a.load(std::memory_order_relaxed);
  };
  s.accepts_pending = get(accepts_pending_);
  s.accept_pool_growths = get(accept_growths_);
  s.accept_failures = get(accept_failures_);
  s.sockets_created = get(sockets_created_);
  s.sockets_reused = get(sockets_reused_);
  s.stale_completions = get(stale_completions_);
  s.operations_in_flight =
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, ops_.load()));
  return s;
}

void engine_impl::post_task(connection_id id, bool bound, task fn) {
  if (bound) {
    const std::uint32_t slot = detail::slot_of(id);
    if (!conns_[slot].tasks.push(std::move(fn))) return;  // a packet is due
    op_started();
    if (!cport_.post(slot, &conn_tasks_op_.ov)) {
      op_finished();  // the housekeeper runs them (as in hand_off)
      watch(slot);
      SetEvent(housekeeper_wake_);
    }
    return;
  }
  auto t = std::make_unique<task_op>();
  t->kind = op_kind::posted;
  t->complete = &engine_impl::on_task;
  t->fn = std::move(fn);
  op_started();
  if (cport_.post(0, &t->ov)) {
    t.release();  // on_task's now
    return;
  }
  op_finished();
  if (spare_tasks_.push(std::move(t->fn))) SetEvent(housekeeper_wake_);
}

void engine_impl::on_task(engine_impl& e, operation& op, const completion&) {
  {
    // Destroyed before the packet counts as done: stop() waits for that,
    // and nothing of a dropped task may outlive it.
    std::unique_ptr<task_op> t(static_cast<task_op*>(&op));
    if (!e.gate_.stopping()) detail::run_task(t->fn);
    e.core_.deliver(detail::thread_batch());
  }
  e.op_finished();
}

void engine_impl::on_conn_tasks(engine_impl& e, operation&,
                                const completion& done) {
  // Under the connection's lock, as its handler calls are: never during
  // one of them, and after the events delivered before.
  connection& c = e.conns_[static_cast<std::uint32_t>(done.key)];
  lock(c);
  c.tasks.run(e.gate_.stopping());
  e.core_.deliver(detail::thread_batch());
  unlock(c);
  e.op_finished();
}

void engine_impl::timers_changed() noexcept {
  SetEvent(housekeeper_wake_);  // fire_timers() arms its wait again
}

void engine_impl::close_all() {
  {
    // Pending accepts: only a cancel on the listening socket reaches them.
    // Under the pool's lock, and closing the pool, so that no AcceptEx is
    // posted after the cancel (a completing accept posts its replacement).
    std::lock_guard g(accept_lock_);
    accepts_closed_ = true;
    if (listen_ != INVALID_SOCKET)
      CancelIoEx(reinterpret_cast<HANDLE>(listen_), nullptr);
  }
  const std::uint32_t n = core_.opts().max_connections;
  for (std::uint32_t slot = 0; slot < n; ++slot) {
    connection& c = conns_[slot];
    lock(c);
    const detail::abrupt next = detail::end_abruptly(c.p);
    if (next == detail::abrupt::close) {
      begin_close(c, make_error_code(errc::engine_stopped), false);
    } else if (next == detail::abrupt::stop_waiting) {
      CancelIoEx(reinterpret_cast<HANDLE>(c.s), nullptr);
      maybe_finish(c);
    }
    core_.deliver(detail::thread_batch());
    unlock(c);
  }
  // Sockets on their way back to the pool: their DisconnectEx may wait
  // for the network; cut it short. Under the pool's lock, as give_back()
  // closes and replaces entries' sockets under it.
  std::lock_guard g(accept_lock_);
  for (std::uint32_t i = 0; i < entry_count_; ++i) {
    socket_entry& e = entries_[i];
    if (e.s != INVALID_SOCKET) {
      CancelIoEx(reinterpret_cast<HANDLE>(e.s), &e.disconnect_op.ov);
    }
  }
}

void engine_impl::wait_drained() {
  // Every operation issued and every packet posted is counted until its
  // completion has been processed; the workers keep processing meanwhile.
  // Nothing should outlive close_all(); if something does, it is a bug,
  // said once, and the housekeeper sweeps again (events are delivered on
  // engine threads only, never on this, the user's).
  const ULONGLONG started = GetTickCount64();
  bool warned = false;
  while (ops_.load(std::memory_order_acquire) > 0) {
    Sleep(1);
    if (!warned && GetTickCount64() - started > 10000) {
      std::fprintf(stderr,
                   "ionet(iocp): stop() still waiting for %lld operations\n",
                   static_cast<long long>(ops_.load()));
      warned = true;
      closed_all_.store(false);
      SetEvent(housekeeper_wake_);
    }
  }
}

void engine_impl::post_quit() noexcept {
  // A worker leaves only on this packet, and nothing else would post it
  // again: a post the port refused (out of memory) is retried until it is
  // queued, or stop() would wait for the workers forever.
  while (!cport_.post(0, &quit_op_.ov)) Sleep(1);
}

void engine_impl::wake_for_stop() noexcept {
  SetEvent(housekeeper_wake_);  // it closes every connection
}

void engine_impl::stop_locked() noexcept {
  if (!gate_.running()) return;
  if (gate_.begin_stop()) core_.stop_events();
  if (housekeeper_wake_) wake_for_stop();
  gate_.wait_for_callers();
  if (!housekeeper_.joinable()) {  // start() failed before it ran
    close_all();
    closed_all_.store(true);
  }
  while (!closed_all_.load()) Sleep(1);
  wait_drained();
  gate_.stopped();
  if (housekeeper_wake_) SetEvent(housekeeper_wake_);
  if (housekeeper_.joinable()) housekeeper_.join();
  post_quit();
  for (auto& t : workers_) t.join();
  workers_.clear();
  release_resources();
}

void engine_impl::release_resources() noexcept {
  for (std::uint32_t i = 0; i < entry_count_; ++i) {
    if (entries_[i].s != INVALID_SOCKET) closesocket(entries_[i].s);
    entries_[i].s = INVALID_SOCKET;
  }
  if (conns_) {
    for (std::uint32_t i = 0; i < core_.opts().max_connections; ++i) {
      core_.slices().give_chain(conns_[i].p.backlog);
    }
  }
  if (listen_ != INVALID_SOCKET) closesocket(listen_);
  listen_ = INVALID_SOCKET;
  if (accept_event_ != WSA_INVALID_EVENT) WSACloseEvent(accept_event_);
  accept_event_ = WSA_INVALID_EVENT;
  if (housekeeper_wake_) CloseHandle(housekeeper_wake_);
  housekeeper_wake_ = nullptr;
  cport_.close();
  conns_.reset();
  entries_.reset();
  entry_count_ = 0;
  free_entries_.clear();
  posted_accepts_ = 0;
  watch_list_.clear();
  spare_tasks_.clear();
}

}  // namespace ionet::iocp

namespace ionet {

std::unique_ptr<engine> make_engine(const options& opts) {
  return std::make_unique<iocp::engine_impl>(opts);
}

}  // namespace ionet
