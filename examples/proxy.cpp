// ionet-example-proxy: relays every client to an upstream server, both
// ways, byte for byte.
//
// One engine does both sides: it accepts clients, and for each one opens a
// connection of its own to --upstream with engine::connect(). Raw framing:
// the bytes pass through as they come, whatever protocol they carry. The
// inline handler, on the engine's threads: a relay is one send() on the
// thread that read the bytes, with no hand-off to a thread of ours. The
// two connections of a pair find each other through their context (a
// `link`), so no lookup table is needed.
//
// Threads: one connection's events come one at a time. The upstream is
// opened `beside` its client, on the same engine thread where the backend
// has one thread per connection (libuv, io_uring); on IOCP any worker
// serves either end, so the two ends of a link may be served at once, and
// what they share (the backlogs, the count of open ends) is under the
// link's mutex.
// A link lives until the closed events of both its ends: no event of
// either end can come after its own closed event, so every handler call
// that finds the link in its context finds it alive.
//
//   client --accept--> [link] --connect()--> upstream
//
// What the client sends before the upstream connection has opened is
// queued by the engine and goes out once it has. When either side ends,
// the other is closed gracefully: what was relayed to it still goes out
// first. An upstream that cannot be reached (refused, timed out) ends its
// client's connection with a reset.
//
// A side that reads more slowly than the other sends: send() answers
// queue_full, the bytes wait in the link's backlog for that side, and the
// engine's `writable` event says when to send them. A backlog past
// kMaxBacklogBytes resets both connections (a real proxy would rather stop
// reading the fast side; ionet reads on until a connection's own queue is
// half full).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <span>
#include <system_error>

#include "common/cli.hpp"
#include "ionet/ionet.hpp"

namespace {

constexpr const char* kName = "ionet-example-proxy";
constexpr std::size_t kMaxBacklogBytes = 16u << 20;

bool try_later(std::error_code ec) {
  return ec == ionet::errc::queue_full || ec == ionet::errc::pool_exhausted;
}

// A client and its upstream connection: end 0 was accepted, end 1 made by
// connect(). Bytes read on one end are sent to the other.
struct link {
  std::mutex lock;  // guards what follows
  ionet::connection_id end[2]{};
  // What waits to be sent to end[i]: the engine refused it for now.
  std::deque<std::vector<std::byte>> backlog[2];
  std::size_t backlog_bytes[2] = {0, 0};
  int open_ends = 0;  // ends whose closed event has not come yet

  int side_of(ionet::connection_id conn) const {
    return conn == end[0] ? 0 : 1;
  }
};

class proxy {
 public:
  proxy(std::string host, std::uint16_t port)
      : host_(std::move(host)), port_(port) {}

  // The inline handler: on an engine thread, for each event.
  void handle(ionet::engine& engine, const ionet::event& e) {
    auto* l = static_cast<link*>(e.context());
    switch (e.type) {
      case ionet::event_type::connected:
        // An upstream connection arrives with its link as context; a
        // client without one.
        if (!l) accept(engine, e.conn);
        break;
      case ionet::event_type::message:
        if (l) relay(engine, *l, e.conn, e.data);
        break;
      case ionet::event_type::writable:
        if (l) send_backlog(engine, *l, e.conn);
        break;
      case ionet::event_type::closed:
        if (l) end(engine, l, e.conn, e.reason);
        break;
      case ionet::event_type::task:
        e.run();  // it posts nothing; run() is all a task event asks
        break;
    }
  }

  std::uint64_t links() const { return links_.load(); }
  std::uint64_t upstream_failures() const { return upstream_failures_.load(); }
  std::uint64_t closed_for_backlog() const {
    return closed_for_backlog_.load();
  }

 private:
  void accept(ionet::engine& engine, ionet::connection_id client) {
    auto* l = new link;
    l->end[0] = client;
    l->open_ends = 1;
    // The upstream's events carry the link from the first on, and may
    // come on another thread before connect() has even returned here: so
    // end[] is read only under the lock, and connect() is called with it
    // held, so they find end[1] set.
    std::unique_lock g(l->lock);
    ionet::connect_options how;
    how.context = l;
    // On the client's thread (libuv, io_uring): the two ends' handlers then
    // take turns, and a relay to the other end is written at once.
    how.beside = client;
    const ionet::connect_result r = engine.connect(host_, port_, how);
    if (!r) {
      // The engine is full or stopping: the client cannot be served.
      g.unlock();
      delete l;
      ++upstream_failures_;
      (void)engine.close(client, ionet::close_mode::reset);
      return;
    }
    l->end[1] = r.conn;
    l->open_ends = 2;
    g.unlock();
    ++links_;
    // Only now may the client's events find the link. Should the client
    // be gone already, its closed event (next, on this thread) comes
    // without the link: the upstream's must then end it alone.
    if (engine.set_context(client, l)) {
      std::lock_guard again(l->lock);
      l->end[0] = ionet::connection_id{};
      --l->open_ends;
      (void)engine.close(l->end[1], ionet::close_mode::reset);
    }
  }

  // Bytes read on `from` go to the other end.
  void relay(ionet::engine& engine, link& l, ionet::connection_id from,
             std::span<const std::byte> bytes) {
    std::lock_guard g(l.lock);
    const int to = 1 - l.side_of(from);
    if (l.backlog[to].empty()) {
      const std::error_code ec = engine.send(l.end[to], bytes);
      if (!try_later(ec)) return;  // sent, or that side is gone
    }
    // The bytes live only until release(): keep a copy, in order.
    l.backlog[to].emplace_back(bytes.begin(), bytes.end());
    l.backlog_bytes[to] += bytes.size();
    if (l.backlog_bytes[to] > kMaxBacklogBytes) {
      ++closed_for_backlog_;
      // Errors only mean that end is closing or gone already.
      (void)engine.close(l.end[0], ionet::close_mode::reset);
      (void)engine.close(l.end[1], ionet::close_mode::reset);
    }
  }

  // `conn` drained: what waits for it goes now, until the engine refuses
  // again (it then owes `conn` another writable event).
  void send_backlog(ionet::engine& engine, link& l, ionet::connection_id conn) {
    std::lock_guard g(l.lock);
    const int side = l.side_of(conn);
    auto& q = l.backlog[side];
    while (!q.empty()) {
      if (try_later(engine.send(l.end[side], q.front()))) return;
      l.backlog_bytes[side] -= q.front().size();
      q.pop_front();
    }
  }

  void end(ionet::engine& engine, link* l, ionet::connection_id conn,
           std::error_code reason) {
    bool last;
    {
      std::lock_guard g(l->lock);
      const int side = l->side_of(conn);
      const bool never_opened = side == 1 && !reason_is_after_open(reason);
      if (never_opened) ++upstream_failures_;
      // The other end: gracefully, so what was relayed to it still goes
      // out; a client whose upstream never opened gets a reset.
      const int other = 1 - side;
      if (l->end[other] != ionet::connection_id{}) {
        (void)engine.close(l->end[other], never_opened
                                              ? ionet::close_mode::reset
                                              : ionet::close_mode::graceful);
      }
      l->backlog[side].clear();  // no one to send it to
      last = --l->open_ends == 0;
    }
    if (last) delete l;
  }

  // Whether a close reason ends a connection that had opened: every reason
  // but the ones a connect that failed gives.
  static bool reason_is_after_open(std::error_code reason) {
    return reason != ionet::errc::connection_refused &&
           reason != ionet::errc::connect_timeout &&
           reason != ionet::errc::host_unreachable;
  }

  const std::string host_;
  const std::uint16_t port_;
  std::atomic<std::uint64_t> links_{0};
  std::atomic<std::uint64_t> upstream_failures_{0};
  std::atomic<std::uint64_t> closed_for_backlog_{0};
};

}  // namespace

int main(int argc, char** argv) {
  example::server_flags flags;
  if (auto done = example::parse_flags(
          argc, argv, kName,
          "Relays each client to --upstream and back, byte for byte.", flags,
          /*upstream=*/true)) {
    return *done;
  }

  ionet::options opts;
  example::apply(flags, opts);
  opts.mode = ionet::framing::raw;
  // Every client costs two connections: its own and its upstream's.
  if (flags.max_connections) opts.max_connections = 2 * *flags.max_connections;

  proxy relay(flags.upstream_host, flags.upstream_port);
  opts.handler = [&relay](ionet::engine& engine, const ionet::event& e) {
    relay.handle(engine, e);
  };
  auto engine = ionet::make_engine(opts);
  example::stop_on_signals();
  if (ionet::status st = engine->start(); !st) {
    return example::start_failed(kName, st);
  }
  example::print_listening(opts.host, engine->port());
  example::wait_for_stop_signal();
  // Every connection still open gets its closed event, on the engine's
  // threads, before stop() returns: the last links are freed there.
  engine->stop();
  std::fprintf(stderr,
               "%s: %llu clients relayed, %llu upstream connections failed, "
               "%llu reset over the backlog cap\n",
               kName, static_cast<unsigned long long>(relay.links()),
               static_cast<unsigned long long>(relay.upstream_failures()),
               static_cast<unsigned long long>(relay.closed_for_backlog()));
  return 0;
}
