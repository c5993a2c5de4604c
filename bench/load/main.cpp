// ionet-load: an echo load generator on raw epoll (Linux).
//
// It shares no code with the engine on purpose: the bytes on the wire are
// produced and checked here, from a deterministic pattern, so an engine
// bug cannot cancel itself out. Every echoed byte is compared. Closed loop,
// latency is the time from queueing a message to having its whole echo
// back; open loop (--rate), it runs from the message's intended send time,
// so a server that falls behind cannot hide its queueing delay by slowing
// the generator down (coordinated omission). Two more modes measure
// connection handling rather than echoes: connect-burst and idle.
#include <arpa/inet.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "ionet/version.hpp"
#include "load/worker.hpp"

namespace {

using namespace ionet_bench;

constexpr std::int64_t ns_per_s = 1'000'000'000;
constexpr std::size_t max_error_samples = 10;

void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

bool parse_address(std::string host, std::uint16_t port, load_config& cfg) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::memset(&cfg.addr, 0, sizeof cfg.addr);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&cfg.addr);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    cfg.addr_len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&cfg.addr);
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    cfg.addr_len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

bool is_ipv4_loopback(const load_config& cfg) {
  if (cfg.addr.ss_family != AF_INET) return false;
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(&cfg.addr);
  return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
}

// utime + stime of a process from /proc/PID/stat, in seconds.
std::optional<double> process_cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  // The command name (field 2) may hold spaces; fields resume after ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // After ')': state is field 3; utime and stime are fields 14 and 15.
  for (int f = 3; f <= 15 && (rest >> field); ++f) {
    if (f == 14) utime = std::stoull(field);
    if (f == 15) stime = std::stoull(field);
  }
  const long ticks = ::sysconf(_SC_CLK_TCK);
  if (ticks <= 0) return std::nullopt;
  return static_cast<double>(utime + stime) / static_cast<double>(ticks);
}

struct self_usage {
  double cpu_s = 0;
  // Times another task took the CPU from us: when open-loop sends run
  // late, this tells a crowded core from a slow generator.
  long preempted = 0;
};

self_usage self_usage_now() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) +
           static_cast<double>(tv.tv_usec) / 1e6;
  };
  return {sec(ru.ru_utime) + sec(ru.ru_stime), ru.ru_nivcsw};
}

// Rounds to `decimals` places so the JSON shows 12.3, not 12.300000000001.
double round_to(double v, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return std::round(v * scale) / scale;
}

void sleep_until_ns(std::int64_t t) {
  const std::int64_t d = t - now_ns();
  if (d > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(d));
}

double seconds_between(std::int64_t from, std::int64_t to) {
  return static_cast<double>(to - from) / 1e9;
}

// Replaces the file through a temporary one and rename(), so a script that
// polls it never reads a half-written word.
bool write_word(const std::string& path, const char* word) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!(out << word << '\n')) return false;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

nlohmann::json latency_json(const histogram& h) {
  auto us = [](std::uint64_t ns) {
    return round_to(static_cast<double>(ns) / 1e3, 1);
  };
  return {{"p50", us(h.quantile(0.50))}, {"p90", us(h.quantile(0.90))},
          {"p99", us(h.quantile(0.99))}, {"p999", us(h.quantile(0.999))},
          {"max", us(h.max())},          {"mean", round_to(h.mean() / 1e3, 1)},
          {"count", h.count()}};
}

// The live counters of all workers, for the progress line.
struct live_counts {
  std::uint64_t completed = 0;
  std::uint64_t trouble = 0;
  std::uint64_t connect_failed = 0;
  std::uint64_t late_or_skipped = 0;
  std::uint32_t open = 0;
};

live_counts sample(const std::vector<std::unique_ptr<worker>>& workers) {
  live_counts s;
  for (const auto& w : workers) {
    s.completed += w->completed.load(std::memory_order_relaxed);
    s.trouble += w->trouble.load(std::memory_order_relaxed);
    s.connect_failed += w->connect_failed.load(std::memory_order_relaxed);
    s.late_or_skipped += w->late_or_skipped.load(std::memory_order_relaxed);
    s.open += w->connected.load(std::memory_order_relaxed);
  }
  return s;
}

template <class Flag>
bool all_set(const std::vector<std::unique_ptr<worker>>& workers, Flag flag) {
  return std::all_of(workers.begin(), workers.end(), [&](const auto& w) {
    return ((*w).*flag).load(std::memory_order_acquire);
  });
}

// Sleeps until all workers have set `flag` or until `deadline`, printing
// `phase` and the open count to stderr each second.
template <class Flag>
void wait_for_workers(const std::vector<std::unique_ptr<worker>>& workers,
                      Flag flag, std::int64_t deadline, const char* phase,
                      std::int64_t t0) {
  std::int64_t next_tick = now_ns() + ns_per_s;
  while (!all_set(workers, flag) && now_ns() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const std::int64_t now = now_ns();
    if (now < next_tick) continue;
    const live_counts s = sample(workers);
    std::fprintf(
        stderr,
        "ionet-load: %s %5.1f s: %u open, %llu connect failures, %llu echoed, "
        "%llu problems\n",
        phase, seconds_between(t0, now), s.open,
        static_cast<unsigned long long>(s.connect_failed),
        static_cast<unsigned long long>(s.completed),
        static_cast<unsigned long long>(s.trouble));
    next_tick = now + ns_per_s;
  }
}

// The echo mode's measured window: warmup, then --duration seconds, with a
// progress line each second and CPU samples at the window's edges.
struct echo_window {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::optional<double> server_cpu_begin, server_cpu_end;
  std::optional<double> upstream_cpu_begin, upstream_cpu_end;
  self_usage self_begin, self_end;
};

echo_window run_echo_window(const load_config& cfg, load_clock& clock,
                            const std::vector<std::unique_ptr<worker>>& workers,
                            std::uint32_t connected, int server_pid,
                            int upstream_pid, std::int64_t t0) {
  echo_window w;
  const std::int64_t start = now_ns();
  w.begin = start + static_cast<std::int64_t>(cfg.warmup_s * 1e9);
  w.end = connected == 0
              ? w.begin
              : w.begin + static_cast<std::int64_t>(cfg.duration_s * 1e9);
  clock.measure_begin.store(w.begin, std::memory_order_relaxed);
  clock.measure_end.store(w.end, std::memory_order_relaxed);
  // The open-loop schedule starts with the warmup, so the window measures
  // a schedule already running.
  clock.schedule_start.store(start, std::memory_order_release);

  bool sampled_begin = false;
  std::uint64_t last_completed = 0, last_lagged = 0;
  std::int64_t last_tick = now_ns();
  std::int64_t next_tick = last_tick + ns_per_s;
  for (;;) {
    std::int64_t wake = std::min(next_tick, w.end);
    if (!sampled_begin) wake = std::min(wake, w.begin);
    sleep_until_ns(wake);
    const std::int64_t now = now_ns();
    if (!sampled_begin && now >= w.begin) {
      sampled_begin = true;
      if (server_pid != 0) w.server_cpu_begin = process_cpu_seconds(server_pid);
      if (upstream_pid != 0)
        w.upstream_cpu_begin = process_cpu_seconds(upstream_pid);
      w.self_begin = self_usage_now();
    }
    if (now >= w.end) {
      if (server_pid != 0) w.server_cpu_end = process_cpu_seconds(server_pid);
      if (upstream_pid != 0)
        w.upstream_cpu_end = process_cpu_seconds(upstream_pid);
      w.self_end = self_usage_now();
      return w;
    }
    if (now < next_tick) continue;
    const live_counts s = sample(workers);
    const double secs = seconds_between(last_tick, now);
    const double rate =
        static_cast<double>(s.completed - last_completed) / secs;
    std::string lag;
    if (cfg.rate > 0) {
      lag = ", " + std::to_string(s.late_or_skipped - last_lagged) +
            " late or skipped";
    }
    std::fprintf(stderr,
                 "ionet-load: %s %5.1f s: %10.0f msg/s %9.2f MiB/s, %u open, "
                 "%llu problems%s\n",
                 now < w.begin ? "warmup " : "measure",
                 seconds_between(t0, now), rate,
                 rate * cfg.size / (1024.0 * 1024.0), s.open,
                 static_cast<unsigned long long>(s.trouble), lag.c_str());
    last_completed = s.completed;
    last_lagged = s.late_or_skipped;
    last_tick = now;
    next_tick = now + ns_per_s;
  }
}

load_result merge_results(const std::vector<std::unique_ptr<worker>>& workers) {
  load_result total;
  for (const auto& w : workers) {
    const load_result& r = w->result;
    total.messages += r.messages;
    total.bytes += r.bytes;
    total.corrupted += r.corrupted;
    total.connect_failures += r.connect_failures;
    total.errors += r.errors;
    total.stalled += r.stalled;
    total.connected += r.connected;
    total.latency.merge(r.latency);
    total.connect_latency.merge(r.connect_latency);
    total.connect_done_at = std::max(total.connect_done_at, r.connect_done_at);
    total.sends += r.sends;
    total.late_sends += r.late_sends;
    total.skipped_sends += r.skipped_sends;
    total.send_lag.merge(r.send_lag);
    total.open_after_hold += r.open_after_hold;
    total.echoed += r.echoed;
    for (const auto& s : r.error_samples) {
      if (total.error_samples.size() < max_error_samples)
        total.error_samples.push_back(s);
    }
  }
  return total;
}

}  // namespace

static int run(int argc, char** argv) {
  CLI::App app{
      "ionet-load: echo load generator (raw epoll, Linux).\n"
      "--mode echo: each connection sends messages of --size bytes, closed loop\n"
      "(--inflight outstanding) or open loop (--rate), and every echoed byte is\n"
      "checked against a deterministic pattern. --mode connect-burst and\n"
      "--mode idle measure connection handling instead."};
  app.footer(
      "Output: a progress line on stderr each second; at the end one JSON object\n"
      "on stdout. Every mode: {mode, connections, connected, threads, framing,\n"
      "size, connect_seconds, connect_latency_us:{p50,p90,p99,p999,max,mean,count},\n"
      "connect_failures, errors, corrupted_bytes, error_samples:[...], ...}.\n"
      "echo adds {inflight, loop, duration_s, warmup_s, messages, bytes,\n"
      "msgs_per_sec, mib_per_sec, latency_us:{p50,p90,p99,p999,max,mean,count},\n"
      "stalled_connections, client_cpu_s, client_preempted (involuntary context\n"
      "switches in the window), server_cpu_s, server_cpu_us_per_msg, and with\n"
      "--upstream-pid upstream_cpu_s, upstream_cpu_us_per_msg};\n"
      "open loop also {offered_rate, rate_per_connection, sends, late_sends,\n"
      "skipped_sends, max_send_lag_us, send_lag_us:{p50,...}}, counting the\n"
      "messages whose intended time is inside the window. late_sends: sent\n"
      "more than 1 ms after the intended time; skipped_sends: not sent because\n"
      "the connection had --inflight outstanding (the server, or the\n"
      "generator, fell behind); send_lag_us: actual minus intended send time.\n"
      "connect-burst adds {burst_inflight}. idle adds {hold_s, open_after_hold,\n"
      "echoed, stalled_connections}.\n"
      "bytes and mib_per_sec count echoed payload bytes in one direction,\n"
      "headers excluded. raw framing: the stream is checked byte for byte and a\n"
      "message counts as done when --size bytes of it came back, however the\n"
      "server split them.\n"
      "Exit codes: 0 success; 1 corruption, a connect failure, a connection\n"
      "error, a stalled connection, no message echoed (echo) or a probe that\n"
      "did not come back (idle); 2 bad flags.");

  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string framing = "length_prefix";
  std::string mode = "echo";
  std::string ready_file;
  std::uint32_t threads = 1;
  std::uint32_t burst_inflight = 1024;
  int server_pid = 0;
  int upstream_pid = 0;
  load_config cfg;

  app.add_option(
         "--mode", mode,
         "echo: echo load (closed loop, or open loop with --rate);\n"
         "connect-burst: open --connections at once (up to\n"
         "--burst-inflight connects in flight), time them, close;\n"
         "idle: open --connections, hold them silent for --hold seconds,\n"
         "then send one --size message on each and check every echo")
      ->check(CLI::IsMember({"echo", "connect-burst", "idle"}))
      ->capture_default_str();
  app.add_option("--host", host, "server address (IPv4 or IPv6 literal)")
      ->capture_default_str();
  app.add_option("--port", port, "server port")->required();
  app.add_option("--connections", cfg.connections, "connections")
      ->check(CLI::Range(1u, 1000000u))
      ->capture_default_str();
  app.add_option("--size", cfg.size, "payload bytes per message")
      ->check(CLI::Range(1u, 64u << 20))
      ->capture_default_str();
  app.add_option("--inflight", cfg.inflight,
                 "closed loop: messages outstanding per connection;\n"
                 "open loop: the most outstanding per connection (a send due\n"
                 "at the cap is skipped and counted in skipped_sends)")
      ->check(CLI::Range(1u, 4096u))
      ->capture_default_str();
  CLI::Option* rate_opt =
      app.add_option("--rate", cfg.rate,
                     "open loop (echo mode): messages per second over all\n"
                     "connections, each sending rate/connections on a fixed\n"
                     "schedule, their start times spread over one period;\n"
                     "latency counts from each message's intended send time")
          ->check(CLI::Range(0.001, 1e9));
  app.add_option("--duration", cfg.duration_s, "echo: measured seconds")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  app.add_option("--warmup", cfg.warmup_s,
                 "echo: seconds of load before measuring")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  CLI::Option* hold_opt =
      app.add_option("--hold", cfg.hold_s,
                     "idle: seconds to hold the connections silent")
          ->check(CLI::Range(0.0, 86400.0))
          ->capture_default_str();
  app.add_option("--burst-inflight", burst_inflight,
                 "connects in flight at once over all threads (every mode)")
      ->check(CLI::Range(1u, 1000000u))
      ->capture_default_str();
  CLI::Option* source_opt =
      app.add_option(
             "--source-addresses", cfg.source_addresses,
             "bind connection i to 127.0.0.(2 + i % N), port 0, before\n"
             "connecting: N times the ~28,000 ephemeral ports of one\n"
             "source address. Only for a 127.0.0.0/8 IPv4 --host;\n"
             "default: no bind (the kernel picks, 127.0.0.1)")
          ->check(CLI::Range(1u, 253u));
  app.add_option("--ready-file", ready_file,
                 "write 'ready' to this file when every connect has been\n"
                 "settled (established or failed), and 'done' when the hold\n"
                 "(idle), the measured window (echo) or the burst is over;\n"
                 "emptied at start");
  app.add_option("--connect-timeout", cfg.connect_timeout_s,
                 "seconds to wait for all connections")
      ->check(CLI::Range(0.1, 600.0))
      ->capture_default_str();
  app.add_option(
         "--stall-timeout", cfg.stall_s,
         "seconds an echo may be outstanding at the end before the\n"
         "connection counts as stalled (a failure); idle: how long the\n"
         "probe echoes may take")
      ->check(CLI::Range(0.001, 3600.0))
      ->capture_default_str();
  app.add_option("--framing", framing, "length_prefix or raw")
      ->check(CLI::IsMember({"length_prefix", "raw"}))
      ->capture_default_str();
  app.add_option("--threads", threads,
                 "load threads, each with its own epoll and an equal share of\n"
                 "the connections (every mode)")
      ->check(CLI::Range(1u, 256u))
      ->capture_default_str();
  app.add_option("--server-pid", server_pid,
                 "echo: also report this process's CPU time over the measured\n"
                 "window (from /proc/PID/stat)")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--upstream-pid", upstream_pid,
                 "echo: also report a second process's CPU time over the same\n"
                 "window (the server behind a proxy that --server-pid names)")
      ->check(CLI::Range(1, 1 << 30));

  app.set_version_flag("--version", "ionet-load " IONET_VERSION_STRING);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  auto bad_flag = [](const std::string& why) {
    std::cerr << "ionet-load: " << why << "\n";
    return 2;
  };
  if (port == 0) return bad_flag("--port must not be 0");
  if (!parse_address(host, port, cfg)) {
    return bad_flag("--host '" + host + "' is not an IPv4 or IPv6 literal");
  }
  cfg.mode = mode == "idle"            ? load_mode::idle
             : mode == "connect-burst" ? load_mode::connect_burst
                                       : load_mode::echo;
  if (rate_opt->count() > 0 && cfg.mode != load_mode::echo) {
    return bad_flag("--rate: only with --mode echo");
  }
  if (hold_opt->count() > 0 && cfg.mode != load_mode::idle) {
    return bad_flag("--hold: only with --mode idle");
  }
  if (source_opt->count() > 0 && !is_ipv4_loopback(cfg)) {
    return bad_flag(
        "--source-addresses: the sources are 127.0.0.2 and up, which only "
        "reach a 127.0.0.0/8 IPv4 --host, not '" +
        host + "'");
  }
  if (!ready_file.empty() && !write_word(ready_file, "")) {
    return bad_flag("--ready-file: cannot write '" + ready_file +
                    "': " + std::system_category().message(errno));
  }
  if (threads > cfg.connections) threads = cfg.connections;
  cfg.length_prefix = framing == "length_prefix";
  cfg.connect_inflight = std::max(1u, burst_inflight / threads);

  raise_fd_limit();
  const pattern pat;
  load_clock clock;

  std::vector<std::unique_ptr<worker>> workers;
  for (std::uint32_t t = 0; t < threads; ++t) {
    std::vector<std::uint32_t> ids;
    for (std::uint32_t c = t; c < cfg.connections; c += threads)
      ids.push_back(c);
    workers.push_back(
        std::make_unique<worker>(cfg, pat, clock, std::move(ids)));
  }
  const std::int64_t t0 = now_ns();
  std::vector<std::thread> pool;
  pool.reserve(workers.size());
  for (auto& w : workers) pool.emplace_back([&w] { w->run(); });

  // Connect phase: bounded by --connect-timeout (the workers enforce it).
  wait_for_workers(
      workers, &worker::connect_phase_done,
      t0 + static_cast<std::int64_t>((cfg.connect_timeout_s + 1) * 1e9),
      "connect", t0);
  std::uint32_t connected = 0;
  std::int64_t connect_done_at = 0;
  for (auto& w : workers) {
    connected += w->connected.load(std::memory_order_relaxed);
    // Written before connect_phase_done was released, and not after.
    if (w->connect_phase_done.load(std::memory_order_acquire)) {
      connect_done_at = std::max(connect_done_at, w->result.connect_done_at);
    }
  }
  if (connect_done_at == 0) connect_done_at = now_ns();
  const double connect_seconds = seconds_between(t0, connect_done_at);
  std::fprintf(stderr, "ionet-load: %u/%u connected in %.3f s\n", connected,
               cfg.connections, connect_seconds);

  bool ready_file_ok = true;
  auto mark = [&](const char* word) {
    if (ready_file.empty() || write_word(ready_file, word)) return;
    std::fprintf(stderr, "ionet-load: --ready-file: cannot write '%s': %s\n",
                 ready_file.c_str(),
                 std::system_category().message(errno).c_str());
    ready_file_ok = false;
  };
  mark("ready");

  echo_window window;
  double hold_s = 0;
  if (cfg.mode == load_mode::echo) {
    window = run_echo_window(cfg, clock, workers, connected, server_pid,
                             upstream_pid, t0);
    mark("done");
  } else if (cfg.mode == load_mode::connect_burst) {
    mark("done");
    clock.finish.store(true, std::memory_order_relaxed);
  } else {
    const std::int64_t hold_begin = now_ns();
    wait_for_workers(workers, &worker::finished,
                     hold_begin + static_cast<std::int64_t>(cfg.hold_s * 1e9),
                     "hold   ", t0);
    hold_s = seconds_between(hold_begin, now_ns());
    mark("done");
    clock.probe.store(true, std::memory_order_release);
    wait_for_workers(
        workers, &worker::finished,
        now_ns() + static_cast<std::int64_t>((cfg.stall_s + 5) * 1e9),
        "probe  ", t0);
  }
  for (auto& t : pool) t.join();

  const load_result total = merge_results(workers);
  for (const auto& s : total.error_samples) {
    std::fprintf(stderr, "ionet-load: error: %s\n", s.c_str());
  }

  nlohmann::json out = {
      {"mode", mode},
      {"connections", cfg.connections},
      {"connected", connected},
      {"threads", threads},
      {"framing", framing},
      {"size", cfg.size},
      {"connect_seconds", round_to(connect_seconds, 4)},
      {"connect_latency_us", latency_json(total.connect_latency)},
      {"corrupted_bytes", total.corrupted},
      {"connect_failures", total.connect_failures},
      {"errors", total.errors},
      {"error_samples", total.error_samples},
  };
  if (cfg.source_addresses > 0) out["source_addresses"] = cfg.source_addresses;
  bool failed = total.corrupted > 0 || total.connect_failures > 0 ||
                total.errors > 0 || total.stalled > 0 || !ready_file_ok;

  if (cfg.mode == load_mode::echo) {
    const double secs = seconds_between(window.begin, window.end);
    const double msgs_per_sec =
        secs > 0 ? static_cast<double>(total.messages) / secs : 0;
    const double mib_per_sec =
        secs > 0 ? static_cast<double>(total.bytes) / secs / (1024.0 * 1024.0)
                 : 0;
    out["inflight"] = cfg.inflight;
    out["loop"] = cfg.rate > 0 ? "open" : "closed";
    out["warmup_s"] = cfg.warmup_s;
    out["duration_s"] = round_to(secs, 3);
    out["messages"] = total.messages;
    out["bytes"] = total.bytes;
    out["msgs_per_sec"] = round_to(msgs_per_sec, 1);
    out["mib_per_sec"] = round_to(mib_per_sec, 3);
    out["latency_us"] = latency_json(total.latency);
    out["stalled_connections"] = total.stalled;
    out["client_cpu_s"] =
        round_to(window.self_end.cpu_s - window.self_begin.cpu_s, 3);
    out["client_preempted"] =
        window.self_end.preempted - window.self_begin.preempted;
    if (cfg.rate > 0) {
      out["offered_rate"] = cfg.rate;
      out["rate_per_connection"] = round_to(cfg.rate / cfg.connections, 3);
      out["sends"] = total.sends;
      out["late_sends"] = total.late_sends;
      out["skipped_sends"] = total.skipped_sends;
      out["max_send_lag_us"] =
          round_to(static_cast<double>(total.send_lag.max()) / 1e3, 1);
      out["send_lag_us"] = latency_json(total.send_lag);
    }
    if (window.server_cpu_begin && window.server_cpu_end) {
      const double cpu = *window.server_cpu_end - *window.server_cpu_begin;
      out["server_cpu_s"] = round_to(cpu, 3);
      out["server_cpu_us_per_msg"] =
          total.messages > 0
              ? round_to(cpu * 1e6 / static_cast<double>(total.messages), 3)
              : 0.0;
    }
    if (window.upstream_cpu_begin && window.upstream_cpu_end) {
      const double cpu = *window.upstream_cpu_end - *window.upstream_cpu_begin;
      out["upstream_cpu_s"] = round_to(cpu, 3);
      out["upstream_cpu_us_per_msg"] =
          total.messages > 0
              ? round_to(cpu * 1e6 / static_cast<double>(total.messages), 3)
              : 0.0;
    }
    if (total.messages == 0)
      std::fprintf(stderr, "ionet-load: no message was echoed\n");
    failed = failed || total.messages == 0;
  } else if (cfg.mode == load_mode::connect_burst) {
    out["burst_inflight"] = burst_inflight;
  } else {
    out["hold_s"] = round_to(hold_s, 3);
    out["open_after_hold"] = total.open_after_hold;
    out["echoed"] = total.echoed;
    out["stalled_connections"] = total.stalled;
    if (total.echoed < cfg.connections) {
      std::fprintf(stderr, "ionet-load: %llu of %u probes echoed\n",
                   static_cast<unsigned long long>(total.echoed),
                   cfg.connections);
      failed = true;
    }
  }
  std::cout << out.dump() << std::endl;
  return failed ? 1 : 0;
}

int main(int argc, char** argv) {
  // Whatever escapes (CLI11's own errors are handled inside, so this is
  // mostly std::bad_alloc) ends the program with a message, not abort().
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "ionet-load"
              << ": " << e.what() << "\n";
  } catch (...) {
    std::cerr << "ionet-load"
              << ": an unknown exception\n";
  }
  return 1;
}
