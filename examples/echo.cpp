// ionet-example-echo: sends every message back to the client that sent it.
//
// The README's usage program made complete. The pull model: this thread
// poll()s a batch of events, answers them, and release()s the batch.
// Messages are length-prefixed (a 4-byte big-endian length, then the
// bytes), and each comes back as one whole message.
//
// What send() answers decides what happens to an echo:
//   queue_full, pool_exhausted  the client reads more slowly than it sends.
//       The echo is copied into the connection's backlog, and its later
//       echoes queue behind it so order is kept. The engine owes the
//       connection one `writable` event, which comes once its queue has
//       drained (options::send_low_water): the backlog is sent then. A
//       client that never reads would grow its backlog without end, so
//       past kMaxBacklogBytes the connection is reset.
//   stale_connection, closing  the connection is gone or going: its echo
//       has no one to go to, and is dropped.
#include <cstddef>
#include <cstdio>
#include <deque>
#include <span>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "common/cli.hpp"
#include "ionet/ionet.hpp"

namespace {

constexpr const char* kName = "ionet-example-echo";
constexpr std::size_t kMaxBacklogBytes = 16u << 20;

// Echoes the engine would not take yet, oldest first.
struct backlog {
  std::deque<std::vector<std::byte>> messages;
  std::size_t bytes = 0;
};

bool try_later(std::error_code ec) {
  return ec == ionet::errc::queue_full || ec == ionet::errc::pool_exhausted;
}

class echo_server {
 public:
  explicit echo_server(ionet::engine& engine) : engine_(engine) {}

  void handle(const ionet::event& e) {
    switch (e.type) {
      case ionet::event_type::message:
        echo(e.conn, e.data);
        break;
      case ionet::event_type::writable:
        send_backlog(e.conn);
        break;
      case ionet::event_type::task:
        e.run();  // engine::post() or a timer's work, on this thread
        break;
      case ionet::event_type::closed:
        backlogs_.erase(e.conn);  // what it held has no one to go to
        break;
      case ionet::event_type::connected:
        break;
    }
  }

  std::size_t backlogged() const { return backlogged_; }
  std::size_t closed_for_backlog() const { return closed_for_backlog_; }

 private:
  void echo(ionet::connection_id conn, std::span<const std::byte> message) {
    auto it = backlogs_.find(conn);
    if (it == backlogs_.end()) {
      const std::error_code ec = engine_.send(conn, message);
      if (!try_later(ec)) return;  // sent, or the connection is gone
      it = backlogs_.try_emplace(conn).first;
    }
    // The message's bytes live only until release(): keep a copy.
    backlog& b = it->second;
    b.messages.emplace_back(message.begin(), message.end());
    b.bytes += message.size();
    ++backlogged_;
    if (b.bytes > kMaxBacklogBytes) {
      backlogs_.erase(it);
      ++closed_for_backlog_;
      // Reset, not graceful: a graceful close would go on sending what is
      // queued to a client that does not read. An error means the
      // connection is closing or gone already, which is the aim.
      (void)engine_.close(conn, ionet::close_mode::reset);
    }
  }

  // The connection drained: send what waits, in order, until the engine
  // refuses again (then it owes the connection another writable event).
  void send_backlog(ionet::connection_id conn) {
    const auto it = backlogs_.find(conn);
    if (it == backlogs_.end()) return;
    backlog& b = it->second;
    while (!b.messages.empty()) {
      if (try_later(engine_.send(conn, b.messages.front()))) return;
      b.bytes -= b.messages.front().size();
      b.messages.pop_front();
    }
    backlogs_.erase(it);
  }

  ionet::engine& engine_;
  // Only connections with a backlog have an entry, so the map stays small:
  // most echoes find none and go straight to send().
  std::unordered_map<ionet::connection_id, backlog> backlogs_;
  std::size_t backlogged_ = 0;          // echoes that waited in a backlog
  std::size_t closed_for_backlog_ = 0;  // connections reset over the cap
};

}  // namespace

int main(int argc, char** argv) {
  example::server_flags flags;
  if (auto done = example::parse_flags(
          argc, argv, kName, "Echoes every length-prefixed message back.",
          flags)) {
    return *done;
  }

  ionet::options opts;
  example::apply(flags, opts);
  opts.mode = ionet::framing::length_prefix;

  auto engine = ionet::make_engine(opts);
  example::stop_on_signals();
  if (ionet::status st = engine->start(); !st) {
    return example::start_failed(kName, st);
  }
  example::print_listening(opts.host, engine->port());

  echo_server server(*engine);
  std::vector<ionet::event> events(256);
  while (!example::stop_requested.load(std::memory_order_relaxed)) {
    // The timeout only bounds how late a stop signal is noticed.
    const std::size_t n = engine->poll(events, std::chrono::milliseconds(100));
    for (std::size_t i = 0; i < n; ++i) server.handle(events[i]);
    engine->release({events.data(), n});  // message bytes live until here
  }
  engine->stop();
  std::fprintf(stderr,
               "%s: %zu echoes waited in a backlog, %zu connections "
               "reset over the cap\n",
               kName, server.backlogged(), server.closed_for_backlog());
  return 0;
}
