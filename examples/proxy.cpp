// ionet-example-proxy: relays every client to an upstream server, both
// ways, byte for byte.
//
// One engine does both sides: it accepts clients, and for each one opens a
// connection of its own to --upstream with engine::connect(). Raw framing:
// the bytes pass through as they come, whatever protocol they carry. The
// pull model, on this one thread; the two connections of a pair find each
// other through their context (a `link`), so no lookup table is needed.
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
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <span>
#include <system_error>
#include <vector>

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
  proxy(ionet::engine& engine, std::string host, std::uint16_t port)
      : engine_(engine), host_(std::move(host)), port_(port) {}

  void handle(const ionet::event& e) {
    auto* l = static_cast<link*>(e.context());
    switch (e.type) {
      case ionet::event_type::connected:
        // An upstream connection arrives with its link as context; a
        // client without one.
        if (!l) accept(e.conn);
        break;
      case ionet::event_type::message:
        if (l) relay(*l, 1 - l->side_of(e.conn), e.data);
        break;
      case ionet::event_type::writable:
        if (l) send_backlog(*l, l->side_of(e.conn));
        break;
      case ionet::event_type::closed:
        if (l) end(l, e.conn, e.reason);
        break;
    }
  }

  std::uint64_t links() const { return links_; }
  std::uint64_t upstream_failures() const { return upstream_failures_; }
  std::uint64_t closed_for_backlog() const { return closed_for_backlog_; }

 private:
  void accept(ionet::connection_id client) {
    auto* l = new link;
    l->end[0] = client;
    // Set before anything else can see the link: a context set on a
    // connection already gone fails, and nothing else will name the link.
    if (engine_.set_context(client, l)) {
      delete l;
      return;
    }
    l->open_ends = 1;
    ionet::connect_options how;
    how.context = l;
    const ionet::connect_result r = engine_.connect(host_, port_, how);
    if (!r) {
      // The engine is full or stopping: the client cannot be served.
      ++upstream_failures_;
      (void)engine_.close(client, ionet::close_mode::reset);
      return;
    }
    l->end[1] = r.conn;
    l->open_ends = 2;
    ++links_;
  }

  void relay(link& l, int to, std::span<const std::byte> bytes) {
    if (l.backlog[to].empty()) {
      const std::error_code ec = engine_.send(l.end[to], bytes);
      if (!try_later(ec)) return;  // sent, or that side is gone
    }
    // The bytes live only until release(): keep a copy, in order.
    l.backlog[to].emplace_back(bytes.begin(), bytes.end());
    l.backlog_bytes[to] += bytes.size();
    if (l.backlog_bytes[to] > kMaxBacklogBytes) {
      ++closed_for_backlog_;
      // Errors only mean that end is closing or gone already.
      (void)engine_.close(l.end[0], ionet::close_mode::reset);
      (void)engine_.close(l.end[1], ionet::close_mode::reset);
    }
  }

  // end[side] drained: what waits goes now, until the engine refuses again
  // (it then owes that end another writable event).
  void send_backlog(link& l, int side) {
    auto& q = l.backlog[side];
    while (!q.empty()) {
      if (try_later(engine_.send(l.end[side], q.front()))) return;
      l.backlog_bytes[side] -= q.front().size();
      q.pop_front();
    }
  }

  void end(link* l, ionet::connection_id conn, std::error_code reason) {
    const int side = l->side_of(conn);
    if (side == 1 && !reason_is_after_open(reason)) ++upstream_failures_;
    // The other end: gracefully, so what was relayed to it still goes
    // out; a client whose upstream never opened gets a reset.
    const int other = 1 - side;
    if (l->end[other] != ionet::connection_id{}) {
      const bool never_opened = side == 1 && !reason_is_after_open(reason);
      (void)engine_.close(l->end[other], never_opened
                                             ? ionet::close_mode::reset
                                             : ionet::close_mode::graceful);
    }
    l->backlog[side].clear();  // no one to send it to
    if (--l->open_ends == 0) delete l;
  }

  // Whether a close reason ends a connection that had opened: every reason
  // but the ones a connect that failed gives.
  static bool reason_is_after_open(std::error_code reason) {
    return reason != ionet::errc::connection_refused &&
           reason != ionet::errc::connect_timeout &&
           reason != ionet::errc::host_unreachable;
  }

  ionet::engine& engine_;
  std::string host_;
  std::uint16_t port_;
  std::uint64_t links_ = 0;
  std::uint64_t upstream_failures_ = 0;
  std::uint64_t closed_for_backlog_ = 0;
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

  auto engine = ionet::make_engine(opts);
  example::stop_on_signals();
  if (ionet::status st = engine->start(); !st) {
    return example::start_failed(kName, st);
  }
  example::print_listening(opts.host, engine->port());

  proxy relay(*engine, flags.upstream_host, flags.upstream_port);
  std::vector<ionet::event> events(256);
  while (!example::stop_requested.load(std::memory_order_relaxed)) {
    // The timeout only bounds how late a stop signal is noticed.
    const std::size_t n = engine->poll(events, std::chrono::milliseconds(100));
    for (std::size_t i = 0; i < n; ++i) relay.handle(events[i]);
    engine->release({events.data(), n});  // message bytes live until here
  }
  // The links still open are freed by their closed events, which stop()
  // delivers: poll() gives them until it answers 0.
  engine->stop();
  for (;;) {
    const std::size_t n = engine->poll(events, std::chrono::milliseconds(0));
    if (n == 0) break;
    for (std::size_t i = 0; i < n; ++i) relay.handle(events[i]);
    engine->release({events.data(), n});
  }
  std::fprintf(stderr,
               "%s: %llu clients relayed, %llu upstream connections failed, "
               "%llu reset over the backlog cap\n",
               kName, static_cast<unsigned long long>(relay.links()),
               static_cast<unsigned long long>(relay.upstream_failures()),
               static_cast<unsigned long long>(relay.closed_for_backlog()));
  return 0;
}
