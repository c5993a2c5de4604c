// ionet-example-chat: every message a client sends goes to every connected
// client, the sender included, as "HOST:PORT: text" (the sender's address,
// so a client cannot speak in another's name). The sender gets its own
// lines back too: every client sees the one order the server chose.
//
// The pull model, one user thread: the list of clients belongs to this
// thread alone, so it needs no lock.
//
// A client that reads more slowly than the others talk would otherwise
// hold up everyone or grow a queue without end. When send() refuses a
// line to it (queue_full, pool_exhausted), it is marked lagging, and the
// lines meant for it are dropped and counted, not queued. The engine owes
// it one `writable` event, once it has read most of what was queued: it
// is then told "server: N lines dropped" and receives again. (One that
// never reads at all is reset by the engine's write_timeout.)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "common/cli.hpp"
#include "ionet/ionet.hpp"

namespace {

constexpr const char* kName = "ionet-example-chat";
// The longest message either way (options::max_message_bytes). A line
// goes out as the sender's name and text, and a name ("[v6 address]:port: ")
// takes less than kNameRoom bytes: a client's text may have the rest.
constexpr std::uint32_t kMaxLineBytes = 64u << 10;
constexpr std::size_t kNameRoom = 64;

struct client {
  std::string name;           // "127.0.0.1:51234: ", the prefix of its lines
  bool lagging = false;       // a send was refused; waiting for writable
  std::uint64_t dropped = 0;  // lines dropped since it began to lag
};

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

bool try_later(std::error_code ec) {
  return ec == ionet::errc::queue_full || ec == ionet::errc::pool_exhausted;
}

class chat_server {
 public:
  explicit chat_server(ionet::engine& engine) : engine_(engine) {}

  void handle(const ionet::event& e) {
    switch (e.type) {
      case ionet::event_type::connected:
        clients_[e.conn].name = e.peer.to_string() + ": ";
        break;
      case ionet::event_type::message:
        broadcast(e.conn, e.data);
        break;
      case ionet::event_type::writable:
        caught_up(e.conn);
        break;
      case ionet::event_type::task:
        e.run();  // engine::post() or a timer's work, on this thread
        break;
      case ionet::event_type::closed:
        clients_.erase(e.conn);
        break;
    }
  }

  std::uint64_t dropped_total() const { return dropped_total_; }

 private:
  void broadcast(ionet::connection_id from, std::span<const std::byte> text) {
    const auto sender = clients_.find(from);
    if (sender == clients_.end()) return;
    if (text.size() > kMaxLineBytes - kNameRoom) {
      // Too long to go out with its name: the client broke the protocol.
      // An error means it is closing already.
      (void)engine_.close(from);
      return;
    }
    // One copy of the line, sent to everyone: send() copies what it keeps.
    line_.assign(sender->second.name);
    line_.append(reinterpret_cast<const char*>(text.data()), text.size());
    for (auto& [conn, to] : clients_) {
      if (to.lagging) {
        ++to.dropped;
        ++dropped_total_;
        continue;
      }
      const std::error_code ec = engine_.send(conn, bytes_of(line_));
      if (try_later(ec)) {
        to.lagging = true;
        to.dropped = 1;
        ++dropped_total_;
      }
      // Any other error: the client is going, and its closed event will
      // take it off the list.
    }
  }

  // The client has read what was queued for it: tell it what it missed,
  // then let it receive again.
  void caught_up(ionet::connection_id conn) {
    const auto it = clients_.find(conn);
    if (it == clients_.end() || !it->second.lagging) return;
    client& c = it->second;
    const std::string notice =
        "server: " + std::to_string(c.dropped) + " lines dropped";
    if (try_later(engine_.send(conn, bytes_of(notice)))) {
      return;  // refused again: still lagging; another writable will come
    }
    c.lagging = false;
    c.dropped = 0;
  }

  ionet::engine& engine_;
  std::unordered_map<ionet::connection_id, client> clients_;
  std::string line_;  // reused, so a broadcast allocates only as lines grow
  std::uint64_t dropped_total_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  example::server_flags flags;
  if (auto done = example::parse_flags(
          argc, argv, kName,
          "Sends every length-prefixed message to every client as "
          "'HOST:PORT: text'.",
          flags)) {
    return *done;
  }

  ionet::options opts;
  example::apply(flags, opts);
  opts.mode = ionet::framing::length_prefix;
  opts.max_message_bytes = kMaxLineBytes;

  auto engine = ionet::make_engine(opts);
  example::stop_on_signals();
  if (ionet::status st = engine->start(); !st) {
    return example::start_failed(kName, st);
  }
  example::print_listening(opts.host, engine->port());

  chat_server server(*engine);
  std::vector<ionet::event> events(256);
  while (!example::stop_requested.load(std::memory_order_relaxed)) {
    // The timeout only bounds how late a stop signal is noticed.
    const std::size_t n = engine->poll(events, std::chrono::milliseconds(100));
    for (std::size_t i = 0; i < n; ++i) server.handle(events[i]);
    engine->release({events.data(), n});
  }
  engine->stop();
  std::fprintf(stderr, "%s: %llu lines dropped to lagging clients\n", kName,
               static_cast<unsigned long long>(server.dropped_total()));
  return 0;
}
