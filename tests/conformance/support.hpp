// Shared helpers of the conformance suite. Public API and the standard
// library only: the same sources build against every backend (libuv, IOCP
// under Wine, io_uring), so no OS header may appear here.
//
// Catch2 assertions are not thread-safe: helpers that run on client or
// engine threads report problems through return values and counters, and
// the test's main thread asserts.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <ionet/ionet.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "catch.hpp"

// Readable failure messages for the types the suite compares.
namespace Catch {
template <>
struct StringMaker<std::error_code> {
  static std::string convert(const std::error_code& ec) {
    if (!ec) return "ok";
    return std::string(ec.category().name()) + ":" +
           std::to_string(ec.value()) + " (" + ec.message() + ")";
  }
};
template <>
struct StringMaker<ionet::errc> {
  static std::string convert(ionet::errc e) {
    return "ionet::errc::" + ionet::make_error_code(e).message();
  }
};
template <>
struct StringMaker<ionet::status> {
  static std::string convert(const ionet::status& s) { return s.to_string(); }
};
}  // namespace Catch

#if defined(_WIN32)
// Declared in backends/iocp/platform.hpp; every Windows build of the
// library has it (winsock.cpp), whichever backend it was configured with.
namespace ionet::iocp {
bool running_under_wine() noexcept;
}  // namespace ionet::iocp
#endif

namespace ionet_test {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// --- Ids
// ------------------------------------------------------------------------

// Ids are opaque to users. To name a stale, future or never-issued id the
// tests build one as ionet does (common/ids.hpp, whose layout the unit tests
// check): the slot in the low 32 bits, its generation in the high 32.
inline ionet::connection_id made_id(std::uint32_t slot,
                                    std::uint32_t generation) {
  return ionet::connection_id{(std::uint64_t{generation} << 32) | slot};
}
inline std::uint32_t slot_in(ionet::connection_id id) {
  return static_cast<std::uint32_t>(ionet::value_of(id));
}
inline std::uint32_t generation_in(ionet::connection_id id) {
  return static_cast<std::uint32_t>(ionet::value_of(id) >> 32);
}

}  // namespace ionet_test

namespace ionet {
// For the tests' messages (INFO, failed checks): the id's number.
inline std::ostream& operator<<(std::ostream& os, connection_id id) {
  return os << value_of(id);
}
}  // namespace ionet

namespace ionet_test {

// --- How hard to push -------------------------------------------------------

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
#else
inline constexpr bool sanitized = false;
#endif

#if defined(_WIN32)
// Under Wine every socket operation is a round trip through the wineserver
// (shared/WINE.md): loads are cut there. Decided when the test runs, so
// the same .exe gets full loads on native Windows. (The Linux simulator
// build of the IOCP backend, tests/winsim, is not _WIN32: full loads.)
inline const bool slow_platform = ionet::iocp::running_under_wine();
#else
inline constexpr bool slow_platform = false;
#endif

// n for a plain build, less under sanitizers or Wine; never below 1.
inline int scaled(int n, int divisor = 4) {
  if (sanitized || slow_platform) n /= divisor;
  return n < 1 ? 1 : n;
}

// How long to wait for something that must happen. Only a failing test
// waits this long, so it is generous.
inline const std::chrono::milliseconds wait_budget =
    (sanitized || slow_platform) ? std::chrono::milliseconds(20000)
                                 : std::chrono::milliseconds(10000);

// --- Bytes ------------------------------------------------------------------

inline std::uint64_t mix64(std::uint64_t x) noexcept {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Deterministic bytes: the same (n, seed) always gives the same bytes.
inline void fill_pattern(std::span<std::byte> out,
                         std::uint64_t seed) noexcept {
  std::uint64_t s = mix64(seed);
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (i % 8 == 0) s = mix64(s + i);
    out[i] = static_cast<std::byte>(s >> (8 * (i % 8)));
  }
}

inline std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed) {
  std::vector<std::byte> v(n);
  fill_pattern(v, seed);
  return v;
}

inline bool same_bytes(std::span<const std::byte> a,
                       std::span<const std::byte> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// Index of the first differing byte, or -1 when equal.
inline long long first_difference(std::span<const std::byte> a,
                                  std::span<const std::byte> b) {
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<long long>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<long long>(n);
}

inline void put_u32be(std::byte* out, std::uint32_t v) noexcept {
  out[0] = static_cast<std::byte>(v >> 24);
  out[1] = static_cast<std::byte>(v >> 16);
  out[2] = static_cast<std::byte>(v >> 8);
  out[3] = static_cast<std::byte>(v);
}

inline std::uint32_t get_u32be(const std::byte* in) noexcept {
  return (std::uint32_t(in[0]) << 24) | (std::uint32_t(in[1]) << 16) |
         (std::uint32_t(in[2]) << 8) | std::uint32_t(in[3]);
}

// A length_prefix frame: 4-byte big-endian length, then the payload.
inline std::vector<std::byte> frame(std::span<const std::byte> payload) {
  std::vector<std::byte> f(4 + payload.size());
  put_u32be(f.data(), static_cast<std::uint32_t>(payload.size()));
  std::copy(payload.begin(), payload.end(), f.begin() + 4);
  return f;
}

inline std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// --- Options and clients
// ------------------------------------------------------

// 127.0.0.1, port 0 (any free port), otherwise the defaults.
inline ionet::options local_options() {
  ionet::options o;
  o.host = "127.0.0.1";
  o.port = 0;
  return o;
}

inline ionet::status connect_client(ionet::framed_client& c,
                                    std::uint16_t port) {
  return c.connect("127.0.0.1", port, std::chrono::milliseconds(wait_budget));
}

// The error a comparison failure is reported with.
inline std::error_code mismatch() {
  return std::make_error_code(std::errc::bad_message);
}

// Writes `msg` as one frame and reads one message back; bad_message when the
// echo differs. Safe on any thread.
inline std::error_code echo_roundtrip(
    ionet::framed_client& c, std::span<const std::byte> msg,
    std::chrono::milliseconds timeout = wait_budget) {
  if (auto ec = c.write(msg)) return ec;
  std::vector<std::byte> back;
  if (auto ec = c.read(back, timeout)) return ec;
  return same_bytes(back, msg) ? std::error_code{} : mismatch();
}

// Reads and discards until the peer ends the stream; returns that error
// (peer_closed on a clean EOF, a native code on a reset) or timed_out.
inline std::error_code read_until_closed(
    ionet::framed_client& c, std::chrono::milliseconds timeout = wait_budget) {
  std::vector<std::byte> buf(64 * 1024);
  const auto deadline = steady::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - steady::now());
    if (left.count() <= 0) return std::make_error_code(std::errc::timed_out);
    std::size_t got = 0;
    if (auto ec = c.read_some(buf, got, left)) return ec;
  }
}

// A client turned away at max_connections: the engine resets it at once,
// which the client sees when its connect completes or on its first read.
// Returns what ended it: connection_reset as it should be; a connect error,
// peer_closed or timed_out otherwise.
inline std::error_code refusal_of_new_client(
    std::uint16_t port, std::chrono::milliseconds timeout = wait_budget) {
  ionet::framed_client c;
  if (ionet::status st = connect_client(c, port); !st) return st.code;
  return read_until_closed(c, timeout);
}

// Whether `end` (from refusal_of_new_client or read_until_closed) is what
// an abortive close sends: a reset. Under Wine the IOCP backend's abortive
// close (SO_LINGER {on, 0 s}, then closesocket) reaches the client as a
// clean end of stream instead (measured on Wine 8; Windows documents a
// reset, and the simulated Winsock gives one): there, a clean end counts.
inline bool is_reset(std::error_code end) {
  if (end == ionet::errc::connection_reset) return true;
  return slow_platform && end == ionet::errc::peer_closed;
}

inline bool is_timeout(std::error_code ec) {
  return ec == std::errc::timed_out;
}

// Polls `pred` until it holds or `timeout` passes.
template <class Pred>
bool eventually(Pred&& pred, std::chrono::milliseconds timeout = wait_budget) {
  const auto deadline = steady::now() + timeout;
  while (!pred()) {
    if (steady::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// Queues of four messages of `message_bytes` each, which a client that
// does not read fills quickly, and no write_timeout, so nothing closes that
// client while a test waits (fill_queue below).
inline ionet::options small_queue_options(std::uint32_t message_bytes) {
  ionet::options o = local_options();
  o.max_message_bytes = message_bytes;
  o.max_queued_bytes = 4 * (message_bytes + 4);
  o.write_timeout = std::chrono::milliseconds(0);
  return o;
}

// Sends messages of `size` bytes (pattern(size, 0), (size, 1), ...) to
// `id` until the engine keeps refusing them: the client does not read, so
// the socket buffers fill (Linux grows a loopback socket's send buffer for
// a while), then the queue. A refusal may come while bytes still move into
// the socket, and the connection may even hear it is writable again
// meanwhile; it is surely stuck once refusals persist for 300 ms. Returns
// how many went, the last refusal in `refused`.
inline std::uint32_t fill_queue(ionet::engine& eng, ionet::connection_id id,
                                std::size_t size, std::error_code& refused) {
  std::uint32_t sent = 0;
  std::optional<steady::time_point> refused_since;
  const auto deadline = steady::now() + wait_budget;
  while (steady::now() < deadline) {
    refused = eng.send(id, pattern(size, sent));
    if (!refused) {
      ++sent;
      refused_since.reset();
      continue;
    }
    if (refused != ionet::errc::queue_full) break;
    if (!refused_since) {
      refused_since = steady::now();
    } else if (steady::now() - *refused_since > 300ms) {
      break;
    }
    std::this_thread::sleep_for(2ms);
  }
  return sent;
}

// A listener on 127.0.0.1 that accepts nothing, its backlog full: a
// connect to its port hangs (the SYN is dropped) until the connector gives
// up. No traffic leaves the host. Made for each platform in black_hole.cpp
// (it needs the OS's sockets, or the simulated Winsock's). Linux drops
// the SYN, and so do Wine (its sockets are Linux's) and the simulator;
// Windows documents WSAECONNREFUSED for a connect to a full queue
// (listen()), so there error() says so.
class black_hole {
 public:
  black_hole();
  ~black_hole();
  black_hole(const black_hole&) = delete;
  black_hole& operator=(const black_hole&) = delete;
  std::uint16_t port() const { return port_; }
  // Empty when it is ready; otherwise why it is not.
  const std::string& error() const { return error_; }

 private:
  std::vector<std::intptr_t> sockets_;  // the listener, then its fillers
  std::uint16_t port_ = 0;
  std::string error_;
  // Winsock: the fillers' completion port and OVERLAPPEDs, which must
  // outlive their connects (black_hole.cpp).
  std::shared_ptr<void> platform_;
};

// --- A server driven by the pull model (or the inline handler) ---------------

struct closed_record {
  ionet::connection_id id{};
  std::error_code reason;
  void* context = nullptr;
  bool opened = true;  // a connected event came first
};

// What the server saw, in the order it saw it.
struct record {
  std::vector<ionet::connection_id> connected;
  std::vector<closed_record> closed;
  std::uint64_t messages = 0;
  std::uint64_t messages_released = 0;  // pull mode: given back by release()
  std::uint64_t message_bytes = 0;
  std::uint64_t empty_messages = 0;
  std::uint64_t echo_failures = 0;             // the echo's send() failed
  std::vector<ionet::connection_id> writable;  // one per writable event
  std::uint64_t tasks = 0;  // pull mode: task events (the server runs them)
  // Broken per-connection order (message before connected, anything after
  // closed, a second connected, an unknown id): must stay empty.
  std::vector<std::string> order_errors;

  const closed_record* closed_of(ionet::connection_id id) const {
    for (const auto& c : closed) {
      if (c.id == id) return &c;
    }
    return nullptr;
  }
};

class server {
 public:
  // Called for each event on the thread that sees it (the pull loop, or an
  // engine thread in inline mode), before the event is released. The
  // record notes a message just before its callback (so a client that got
  // the reply finds it noted), connected and closed events just after.
  using callback = std::function<void(ionet::engine&, const ionet::event&)>;

  enum class delivery { pull, inline_handler };

  explicit server(ionet::options opts = local_options(), callback cb = {},
                  delivery d = delivery::pull)
      : opts_(std::move(opts)), cb_(std::move(cb)), delivery_(d) {
    if (delivery_ == delivery::inline_handler) {
      opts_.handler = [this](ionet::engine& e, const ionet::event& ev) {
        on_inline(e, ev);
      };
    }
  }
  ~server() {
    stop();
    eng_.reset();  // before the members an inline handler could touch
  }
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  ionet::status start() {
    eng_ = ionet::make_engine(opts_);
    if (!eng_) return {ionet::errc::unsupported, "make_engine returned null"};
    ionet::status s = eng_->start();
    if (!s) return s;
    if (delivery_ == delivery::pull) {
      loop_ = std::thread([this] { run(); });
    }
    return s;
  }

  ionet::engine& engine() { return *eng_; }
  std::uint16_t port() const { return eng_->port(); }
  const ionet::options& opts() const { return opts_; }

  // Stops the pull loop, then the engine, then takes what is left. Safe to
  // call twice.
  void stop() {
    quit_.store(true);
    if (loop_.joinable()) loop_.join();
    if (eng_) {
      eng_->stop();
      if (delivery_ == delivery::pull) {
        std::vector<ionet::event> batch(256);
        for (int i = 0; i < 100000; ++i) {
          const std::size_t n = eng_->poll(batch, 0ms);
          if (n == 0) break;
          handle(std::span(batch.data(), n));
        }
      }
    }
  }

  // Destroys the engine (after stop()).
  void destroy() {
    stop();
    eng_.reset();
  }

  record snapshot() const {
    std::lock_guard g(lock_);
    return rec_;
  }

  // Waits until pred(record) holds; pred runs under the server's lock.
  bool wait_until(const std::function<bool(const record&)>& pred,
                  std::chrono::milliseconds timeout = wait_budget) {
    std::unique_lock g(lock_);
    return changed_.wait_for(g, timeout, [&] { return pred(rec_); });
  }
  bool wait_connected(std::size_t n,
                      std::chrono::milliseconds timeout = wait_budget) {
    return wait_until([n](const record& r) { return r.connected.size() >= n; },
                      timeout);
  }
  bool wait_closed(std::size_t n,
                   std::chrono::milliseconds timeout = wait_budget) {
    return wait_until([n](const record& r) { return r.closed.size() >= n; },
                      timeout);
  }
  bool wait_closed_id(ionet::connection_id id,
                      std::chrono::milliseconds timeout = wait_budget) {
    return wait_until(
        [id](const record& r) { return r.closed_of(id) != nullptr; }, timeout);
  }

  // The default behaviour: send every message back on its connection. On
  // queue_full it retries for a while (the tests that use it have clients
  // that read); any other failure is counted in record::echo_failures.
  void echo_message(ionet::engine& eng, const ionet::event& ev) {
    const auto deadline = steady::now() + wait_budget;
    for (;;) {
      const std::error_code ec = eng.send(ev.conn, ev.data);
      if (!ec) return;
      if (ec == ionet::errc::queue_full && steady::now() < deadline) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      std::lock_guard g(lock_);
      ++rec_.echo_failures;
      return;
    }
  }

 private:
  void dispatch(ionet::engine& eng, const ionet::event& ev) {
    if (cb_) {
      cb_(eng, ev);
    } else if (ev.type == ionet::event_type::message) {
      echo_message(eng, ev);
    }
  }

  void run() {
    std::vector<ionet::event> batch(256);
    while (!quit_.load()) {
      const std::size_t n = eng_->poll(batch, 20ms);
      if (n > 0) handle(std::span(batch.data(), n));
    }
  }

  // A message is recorded just before it is dispatched: the reply its
  // dispatch sends can reach a client at once, and a test that saw the
  // reply must find the message (and every earlier event) in the record.
  // Connected and closed events are recorded just after: a test that waited
  // for one finds what its callback did (a context set, a count).
  // Messages are counted again once released, for tests that need the
  // engine to have its buffers back.
  void handle(std::span<ionet::event> events) {
    std::uint64_t n = 0;
    for (const ionet::event& ev : events) {
      observe(*eng_, ev);
      n += ev.type == ionet::event_type::message;
    }
    eng_->release(events);
    if (n == 0) return;
    {
      std::lock_guard g(lock_);
      rec_.messages_released += n;
    }
    changed_.notify_all();
  }

  void on_inline(ionet::engine& eng, const ionet::event& ev) {
    observe(eng, ev);
  }

  void observe(ionet::engine& eng, const ionet::event& ev) {
    if (ev.type == ionet::event_type::task) {
      ev.run();  // the pull model's posted work and timers
      note(ev);
    } else if (ev.type == ionet::event_type::message) {
      note(ev);
      dispatch(eng, ev);
    } else {
      dispatch(eng, ev);
      note(ev);
    }
  }

  void note(const ionet::event& ev) {
    {
      std::lock_guard g(lock_);
      auto it = state_.find(ev.conn);
      const int st =
          it == state_.end() ? 0 : it->second;  // 0 new, 1 open, 2 closed
      auto bad = [&](const char* what) {
        rec_.order_errors.push_back(what +
                                    std::to_string(ionet::value_of(ev.conn)));
      };
      switch (ev.type) {
        case ionet::event_type::connected:
          if (st != 0) bad("connected twice: ");
          state_[ev.conn] = 1;
          rec_.connected.push_back(ev.conn);
          break;
        case ionet::event_type::message:
          if (st != 1) bad("message outside connected..closed: ");
          ++rec_.messages;
          rec_.message_bytes += ev.data.size();
          if (ev.data.empty()) ++rec_.empty_messages;
          break;
        case ionet::event_type::closed:
          // An outbound connection that never opened (engine::connect())
          // has only its closed event; the client engines of the tests
          // are the ones that do not listen.
          if (st != 1 && !(st == 0 && !opts_.listen))
            bad("closed without open connection: ");
          state_[ev.conn] = 2;
          rec_.closed.push_back({ev.conn, ev.reason, ev.context(), st == 1});
          break;
        case ionet::event_type::writable:
          if (st != 1) bad("writable outside connected..closed: ");
          rec_.writable.push_back(ev.conn);
          break;
        case ionet::event_type::task:  // may follow its closed event
          ++rec_.tasks;
          break;
      }
    }
    changed_.notify_all();
  }

  ionet::options opts_;
  callback cb_;
  delivery delivery_;
  std::unique_ptr<ionet::engine> eng_;
  std::thread loop_;
  std::atomic<bool> quit_{false};

  mutable std::mutex lock_;
  std::condition_variable changed_;
  record rec_;
  std::map<ionet::connection_id, int> state_;
};

// Connects `c` and waits for the server's connected event; returns the new
// connection's id. Only meaningful when no other client connects meanwhile.
inline std::optional<ionet::connection_id> connect_one(server& s,
                                                       ionet::framed_client& c,
                                                       std::string& why) {
  const std::size_t before = s.snapshot().connected.size();
  if (ionet::status st = connect_client(c, s.port()); !st) {
    why = "connect: " + st.to_string();
    return std::nullopt;
  }
  if (!s.wait_connected(before + 1)) {
    why = "no connected event";
    return std::nullopt;
  }
  return s.snapshot().connected.at(before);
}

// A started server with two clients connected: `lazy`, which reads
// nothing until the test says so, and `other`.
struct lazy_and_other {
  explicit lazy_and_other(const ionet::options& o)
      : s(o, [](ionet::engine&, const ionet::event&) {}) {
    REQUIRE(s.start().ok());
    std::string why;
    const auto a = connect_one(s, lazy, why);
    INFO(why);
    REQUIRE(a);
    const auto b = connect_one(s, other, why);
    REQUIRE(b);
    lazy_id = *a;
    other_id = *b;
  }
  server s;
  ionet::framed_client lazy, other;
  ionet::connection_id lazy_id{}, other_id{};
};

// Connected clients, for tests that need a few.
inline std::vector<ionet::framed_client> connect_clients(
    std::uint16_t port, int n, ionet::status& failed) {
  std::vector<ionet::framed_client> v(static_cast<std::size_t>(n));
  for (auto& c : v) {
    ionet::status s = connect_client(c, port);
    if (!s) {
      failed = s;
      break;
    }
  }
  return v;
}

}  // namespace ionet_test
