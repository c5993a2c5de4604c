// ionet-echo: the engine's echo server, for benchmarks and manual tests.
//
// --delivery inline (default): the engine's handler echoes each message on
// the engine's own thread. --delivery pull: the seed's model, the main
// thread poll()s a batch, echoes every message with send() and release()s
// the batch. In length_prefix mode each whole message goes back as one
// frame (send() frames it); in raw mode the bytes of each read go back as
// they came.
//
// Pull model: send() may refuse with queue_full (the client is not reading fast
// enough) or pool_exhausted. Nothing is dropped: the message is copied to a
// per-connection backlog, later messages of that connection queue behind it
// so order is kept, and the backlog is sent when the engine says the
// connection is writable again (event_type::writable). A
// closed-loop client bounds its backlog by what it keeps in flight; one
// that never reads would grow it without bound, so a connection whose
// backlog passes --max-backlog-bytes (default 64 MiB) is closed.
//
// SIGINT/SIGTERM set a flag that the loop checks at least every 100 ms; the
// engine is stopped and its stats printed as one JSON object on stdout.
// With --stats-interval SECONDS the same object is also printed while
// running, one line every SECONDS (from the main thread, which is the only
// one writing to stdout; engine::stats() may be read from any thread), so a
// soak test can watch the counters without stopping the server.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ionet/ionet.hpp"
#if defined(__linux__)
#include "echo_processes.hpp"
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#endif
#if defined(_WIN32)
#include <fcntl.h>
#include <io.h>
#endif

namespace {

std::atomic<int> g_stop{0};
static_assert(std::atomic<int>::is_always_lock_free,
              "the signal handler needs a lock-free flag");

extern "C" void on_signal(int) { g_stop.store(1, std::memory_order_relaxed); }

// Thousands of connections need thousands of descriptors: lift the soft
// limit to the hard one. Failure is not fatal; start() or accept will say.
void raise_fd_limit() {
#if defined(__unix__) || defined(__APPLE__)
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
#endif
}

struct backlog {
  std::deque<std::vector<std::byte>> messages;
  std::size_t bytes = 0;
};

struct echo_counters {
  std::uint64_t backlogged_messages =
      0;  // send() said queue_full/pool_exhausted
  std::uint64_t backlog_peak_bytes = 0;     // largest backlog of one connection
  std::uint64_t backlog_dropped_bytes = 0;  // left in a backlog at close
  std::uint64_t slow_consumer_closes = 0;   // closed: backlog over the cap
  std::uint64_t send_errors = 0;            // stale, closing or other refusals
};

bool is_retryable(std::error_code ec) {
  return ec == ionet::errc::queue_full || ec == ionet::errc::pool_exhausted;
}

class echo_loop {
 public:
  echo_loop(ionet::engine& eng, ionet::framing mode, std::size_t max_chunk,
            std::size_t max_backlog)
      : eng_(eng),
        mode_(mode),
        max_chunk_(max_chunk),
        max_backlog_(max_backlog) {}

  // `each_turn` runs on this thread once per loop turn (at least every
  // 100 ms), where counters() may be read.
  void run(const std::function<void()>& each_turn) {
    std::vector<ionet::event> events(1024);
    while (g_stop.load(std::memory_order_relaxed) == 0) {
      each_turn();
      // The timeout only bounds how late a stop signal is noticed: a
      // backlog waits for its connection's writable event.
      const std::size_t n = eng_.poll(events, std::chrono::milliseconds(100));
      for (std::size_t i = 0; i < n; ++i) handle(events[i]);
      eng_.release(std::span<const ionet::event>(events.data(), n));
    }
    for (auto& [id, b] : pending_) counters_.backlog_dropped_bytes += b.bytes;
    pending_.clear();
  }

  const echo_counters& counters() const noexcept { return counters_; }

 private:
  void handle(const ionet::event& e) {
    switch (e.type) {
      case ionet::event_type::connected:
        break;
      case ionet::event_type::message:
        echo(e.conn, e.data);
        break;
      case ionet::event_type::writable:
        send_backlog(e.conn);
        break;
      case ionet::event_type::task:
        e.run();  // it posts nothing, but a task event asks only this
        break;
      case ionet::event_type::closed: {
        auto it = pending_.find(e.conn);
        if (it != pending_.end()) {
          counters_.backlog_dropped_bytes += it->second.bytes;
          pending_.erase(it);
        }
        break;
      }
    }
  }

  void echo(ionet::connection_id id, std::span<const std::byte> data) {
    // A raw read may be longer than one message may be; cut it. A
    // length_prefix message is never longer (the engine refused it).
    do {
      const std::size_t n = mode_ == ionet::framing::raw
                                ? std::min(data.size(), max_chunk_)
                                : data.size();
      echo_one(id, data.first(n));
      data = data.subspan(n);
    } while (!data.empty());
  }

  void echo_one(ionet::connection_id id, std::span<const std::byte> msg) {
    auto it = pending_.find(id);
    if (it == pending_.end()) {
      const std::error_code ec = eng_.send(id, msg);
      if (!ec) return;
      if (!is_retryable(ec)) {
        ++counters_.send_errors;
        return;
      }
      it = pending_.try_emplace(id).first;
    }
    backlog& b = it->second;
    b.messages.emplace_back(msg.begin(), msg.end());
    b.bytes += msg.size();
    ++counters_.backlogged_messages;
    counters_.backlog_peak_bytes =
        std::max<std::uint64_t>(counters_.backlog_peak_bytes, b.bytes);
    if (b.bytes > max_backlog_) {
      ++counters_.slow_consumer_closes;
      counters_.backlog_dropped_bytes += b.bytes;
      pending_.erase(it);
      (void)eng_.close(id);  // already closing or gone: nothing to do
    }
  }

  // Sends what waits for `id` until the engine refuses again (it then owes
  // the connection another writable event).
  void send_backlog(ionet::connection_id id) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    backlog& b = it->second;
    while (!b.messages.empty()) {
      const std::error_code ec = eng_.send(id, b.messages.front());
      if (is_retryable(ec)) return;
      if (ec) ++counters_.send_errors;
      b.bytes -= b.messages.front().size();
      b.messages.pop_front();
    }
    pending_.erase(it);
  }

  ionet::engine& eng_;
  ionet::framing mode_;
  std::size_t max_chunk_;
  std::size_t max_backlog_;
  std::unordered_map<ionet::connection_id, backlog> pending_;
  echo_counters counters_;
};

nlohmann::json to_json(const ionet::engine_stats& s) {
  return {
      {"threads", s.threads},
      {"connections_open", s.connections_open},
      {"accepted", s.accepted},
      {"closed", s.closed},
      {"rejected", s.rejected},
      {"bytes_received", s.bytes_received},
      {"bytes_sent", s.bytes_sent},
      {"messages_received", s.messages_received},
      {"messages_sent", s.messages_sent},
      {"bytes_queued", s.bytes_queued},
      {"bytes_dropped", s.bytes_dropped},
      {"send_stale", s.send_stale},
      {"send_queue_full", s.send_queue_full},
      {"read_pauses", s.read_pauses},
      {"send_pool_exhausted", s.send_pool_exhausted},
      {"frames_too_large", s.frames_too_large},
      {"pool_slices_total", s.pool_slices_total},
      {"pool_slices_in_use", s.pool_slices_in_use},
      {"events_pending", s.events_pending},
      {"allocations_after_start", s.allocations_after_start},
      {"accepts_pending", s.accepts_pending},
      {"accept_pool_growths", s.accept_pool_growths},
      {"accept_failures", s.accept_failures},
      {"sockets_created", s.sockets_created},
      {"sockets_reused", s.sockets_reused},
      {"stale_completions", s.stale_completions},
      {"operations_in_flight", s.operations_in_flight},
  };
}

// "127.0.0.1" or "[::1]": the host as `listening on` shows it.
std::string listen_host(std::string host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return host;
}

std::string listen_address(const std::string& host, std::uint16_t port) {
  return listen_host(host) + ":" + std::to_string(port);
}

// The inline handler's echo: on the engine's thread, no hand-off. A
// connection whose queue is full (it does not read) is closed as a slow
// consumer: a handler cannot wait, and holding the echo back would need a
// timer to retry it.
struct inline_echo {
  std::size_t max_chunk = 0;
  std::atomic<std::uint64_t> slow_consumer_closes{0};
  std::atomic<std::uint64_t> send_errors{0};

  void operator()(ionet::engine& eng, const ionet::event& e) {
    if (e.type != ionet::event_type::message) return;
    std::span<const std::byte> data = e.data;
    do {
      const std::size_t n = std::min(data.size(), max_chunk);
      if (const std::error_code ec = eng.send(e.conn, data.first(n))) {
        if (is_retryable(ec)) {
          slow_consumer_closes.fetch_add(1, std::memory_order_relaxed);
          (void)eng.close(e.conn);  // already closing or gone: fine
        } else {
          send_errors.fetch_add(1, std::memory_order_relaxed);
        }
        return;
      }
      data = data.subspan(n);
    } while (!data.empty());
  }
};

// The stats object ionet-echo prints: at exit, and every --stats-interval.
nlohmann::json stats_json(const ionet::engine& eng, const std::string& framing,
                          bool pull, const echo_counters& c) {
  return {
      {"backend", eng.backend_name()},
      {"framing", framing},
      {"delivery", pull ? "pull" : "inline"},
      {"engine", to_json(eng.stats())},
      {"echo",
       {{"backlogged_messages", c.backlogged_messages},
        {"backlog_peak_bytes", c.backlog_peak_bytes},
        {"backlog_dropped_bytes", c.backlog_dropped_bytes},
        {"slow_consumer_closes", c.slow_consumer_closes},
        {"send_errors", c.send_errors}}},
  };
}

// --stats-interval: says when the next periodic stats line is due.
class stats_ticker {
 public:
  explicit stats_ticker(double seconds)
      : period_(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(seconds))),
        next_(std::chrono::steady_clock::now() + period_) {}

  // True once per period (never when the period is 0). A late call does
  // not make the following lines come in a burst.
  bool due() {
    if (period_.count() <= 0) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return false;
    next_ += period_;
    if (next_ <= now) next_ = now + period_;
    return true;
  }

 private:
  std::chrono::steady_clock::duration period_;
  std::chrono::steady_clock::time_point next_;
};

// Runs one engine until a signal; prints `listening on`, the stats every
// `stats_interval` seconds (0: never) and, at the end, the stats as one
// JSON object. The process's exit code.
int serve_one(ionet::options opts, const std::string& framing,
              const std::string& host, std::uint64_t max_backlog, bool pull,
              double stats_interval) {
  auto echo = std::make_shared<inline_echo>();
  echo->max_chunk = opts.max_message_bytes;
  if (!pull) {
    opts.handler = [echo](ionet::engine& eng, const ionet::event& e) {
      (*echo)(eng, e);
    };
  }
  auto eng = ionet::make_engine(opts);
  if (ionet::status st = eng->start(); !st) {
    std::cerr << "ionet-echo: " << st.to_string() << "\n";
    return 2;
  }
  std::cout << "listening on " << listen_address(host, eng->port())
            << std::endl;

  // The pull loop's counters plus the inline handler's.
  auto with_inline = [&echo](echo_counters c) {
    c.slow_consumer_closes +=
        echo->slow_consumer_closes.load(std::memory_order_relaxed);
    c.send_errors += echo->send_errors.load(std::memory_order_relaxed);
    return c;
  };
  stats_ticker ticker(stats_interval);
  echo_counters c;
  if (pull) {
    echo_loop loop(*eng, opts.mode, opts.max_message_bytes, max_backlog);
    loop.run([&] {
      if (ticker.due()) {
        std::cout << stats_json(*eng, framing, pull,
                                with_inline(loop.counters()))
                         .dump()
                  << std::endl;
      }
    });
    c = loop.counters();
  } else {
    while (g_stop.load(std::memory_order_relaxed) == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (ticker.due()) {
        std::cout << stats_json(*eng, framing, pull, with_inline(c)).dump()
                  << std::endl;
      }
    }
  }
  eng->stop();
  std::cout << stats_json(*eng, framing, pull, with_inline(c)).dump()
            << std::endl;
  return 0;
}

}  // namespace

static int run(int argc, char** argv) {
  CLI::App app{
      "ionet-echo: echo server on the ionet engine (pull model).\n"
      "Echoes every message back: in length_prefix mode each whole message as\n"
      "one frame, in raw mode the bytes of each read as they arrive."};
  app.footer(
      "Output: once listening, exactly one line 'listening on HOST:PORT' on\n"
      "stdout (IPv6 as [ADDR]:PORT). On SIGINT or SIGTERM the engine is stopped\n"
      "and one JSON object follows on stdout:\n"
      "  {\"backend\": ..., \"engine\": {engine_stats fields}, \"echo\": {...}}\n"
      "(with --processes: the workers' figures summed, and \"workers\").\n"
      "With --stats-interval S, the same object is also printed every S\n"
      "seconds while running, one line each (the last line is the final one).\n"
      "Exit codes: 0 after a signal; 2 on a bad flag, or when the engine\n"
      "refuses to start (bad option, address in use; its message on stderr).");

  ionet::options opts;
  std::string framing = "length_prefix";
  std::uint32_t threads = 0;
  std::uint64_t max_backlog = 0;
  app.add_option("--host", opts.host, "IPv4 or IPv6 literal to listen on")
      ->capture_default_str();
  app.add_option("--port", opts.port, "TCP port; 0 picks a free one")
      ->capture_default_str();
  app.add_option("--framing", framing, "length_prefix or raw")
      ->check(CLI::IsMember({"length_prefix", "raw"}))
      ->capture_default_str();
  CLI::Option* threads_opt = app.add_option(
      "--threads", threads, "engine threads (default: the backend's choice)");
  app.add_option("--max-connections", opts.max_connections,
                 "connections open at once; more are refused")
      ->capture_default_str();
  app.add_option("--max-message-bytes", opts.max_message_bytes,
                 "largest message in either direction")
      ->capture_default_str();
  app.add_option("--max-queued-bytes", opts.max_queued_bytes,
                 "bytes queued per connection before send() says queue_full")
      ->capture_default_str();
  app.add_option("--slice-bytes", opts.slice_bytes, "send buffer slice size")
      ->capture_default_str();
  app.add_option(
      "--max-backlog-bytes", max_backlog,
      "echo bytes held back per connection (send() said queue_full)\n"
      "before the connection is closed;\n"
      "default max(64 MiB, 4 x max-queued-bytes)");

  std::string delivery = "inline";
  app.add_option("--delivery", delivery,
                 "inline: echo in the engine's handler, on its threads (no\n"
                 "hand-off); pull: a user thread polls events and echoes\n"
                 "(the seed's model, one hand-off each way)")
      ->check(CLI::IsMember({"inline", "pull"}))
      ->capture_default_str();

  unsigned processes = 1;
  app.add_option(
         "--processes", processes,
         "worker processes sharing the port through SO_REUSEPORT, each\n"
         "with its own engine (Linux; past one process's file limit)")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();

  double stats_interval = 0;
  app.add_option("--stats-interval", stats_interval,
                 "while running, print the stats JSON object (one line) every\n"
                 "this many seconds; 0: only at exit. Not with --processes")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();

  app.set_version_flag("--version", "ionet-echo " IONET_VERSION_STRING);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  if (processes > 1 && stats_interval > 0) {
    std::cerr
        << "ionet-echo: --stats-interval is not supported with --processes "
           "(each worker has its own engine; their stats are summed only at exit)\n";
    return 2;
  }
  opts.mode =
      framing == "raw" ? ionet::framing::raw : ionet::framing::length_prefix;
  if (threads_opt->count() > 0) opts.threads = threads;
  if (max_backlog == 0) {
    max_backlog = std::max<std::uint64_t>(
        64u << 20, std::uint64_t{opts.max_queued_bytes} * 4);
  }

  raise_fd_limit();
#if defined(_WIN32)
  // Lines end in "\n", not "\r\n": the output is parsed by scripts.
  _setmode(_fileno(stdout), _O_BINARY);
#endif
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  auto serve = [&](const ionet::options& o) {
    return serve_one(o, framing, opts.host, max_backlog, delivery == "pull",
                     stats_interval);
  };
  if (processes > 1) {
#if defined(__linux__)
    return ionet_bench::run_processes(processes, opts, listen_host(opts.host),
                                      g_stop, serve);
#else
    std::cerr
        << "ionet-echo: --processes needs Linux (fork and SO_REUSEPORT)\n";
    return 2;
#endif
  }
  return serve(opts);
}

int main(int argc, char** argv) {
  // Whatever escapes (CLI11's own errors are handled inside, so this is
  // mostly std::bad_alloc) ends the program with a message, not abort().
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "ionet-echo"
              << ": " << e.what() << "\n";
  } catch (...) {
    std::cerr << "ionet-echo"
              << ": an unknown exception\n";
  }
  return 1;
}
