// ionet-load: a closed-loop echo load generator on raw epoll (Linux).
//
// It shares no code with the engine on purpose: the bytes on the wire are
// produced and checked here, from a deterministic pattern, so an engine
// bug cannot cancel itself out. Every echoed byte is compared; latency is
// the time from queueing a message to having its whole echo back.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <arpa/inet.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <unistd.h>

#include "load/worker.hpp"

namespace {

using namespace ionet_bench;

constexpr std::int64_t ns_per_s = 1'000'000'000;

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

double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ionet-load: closed-loop echo load generator (raw epoll, Linux).\n"
      "Each connection keeps --inflight messages of --size bytes outstanding and\n"
      "checks every echoed byte against a deterministic pattern."};
  app.footer(
      "Output: a progress line on stderr each second; at the end one JSON object\n"
      "on stdout: {connections, size, inflight, framing, duration_s, messages,\n"
      "bytes, msgs_per_sec, mib_per_sec, latency_us:{p50,p99,p999,max},\n"
      "corrupted_bytes, connect_failures, errors, ...}. bytes and mib_per_sec\n"
      "count echoed payload bytes in one direction, headers excluded.\n"
      "raw framing: the stream is checked byte for byte and a message counts as\n"
      "done when --size bytes of it came back, however the server split them.\n"
      "Exit codes: 0 success; 1 corruption, a connection error, a stalled\n"
      "connection or no message echoed; 2 bad flags.");

  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string framing = "length_prefix";
  std::uint32_t threads = 1;
  int server_pid = 0;
  load_config cfg;

  app.add_option("--host", host, "server address (IPv4 or IPv6 literal)")->capture_default_str();
  app.add_option("--port", port, "server port")->required();
  app.add_option("--connections", cfg.connections, "connections")
      ->check(CLI::Range(1u, 1000000u))->capture_default_str();
  app.add_option("--size", cfg.size, "payload bytes per message")
      ->check(CLI::Range(1u, 64u << 20))->capture_default_str();
  app.add_option("--inflight", cfg.inflight, "messages outstanding per connection")
      ->check(CLI::Range(1u, 4096u))->capture_default_str();
  app.add_option("--duration", cfg.duration_s, "measured seconds")
      ->check(CLI::Range(0.1, 86400.0))->capture_default_str();
  app.add_option("--warmup", cfg.warmup_s, "seconds of load before measuring")
      ->check(CLI::Range(0.0, 3600.0))->capture_default_str();
  app.add_option("--connect-timeout", cfg.connect_timeout_s,
                 "seconds to wait for all connections")
      ->check(CLI::Range(0.1, 600.0))->capture_default_str();
  app.add_option("--stall-timeout", cfg.stall_s,
                 "seconds an echo may be outstanding at the end before the\n"
                 "connection counts as stalled (a failure)")
      ->check(CLI::Range(0.001, 3600.0))->capture_default_str();
  app.add_option("--framing", framing, "length_prefix or raw")
      ->check(CLI::IsMember({"length_prefix", "raw"}))->capture_default_str();
  app.add_option("--threads", threads, "load threads, each with its own epoll")
      ->check(CLI::Range(1u, 256u))->capture_default_str();
  app.add_option("--server-pid", server_pid,
                 "also report this process's CPU time over the measured window\n"
                 "(from /proc/PID/stat)")
      ->check(CLI::Range(1, 1 << 30));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (port == 0) {
    std::cerr << "ionet-load: --port must not be 0\n";
    return 2;
  }
  if (!parse_address(host, port, cfg)) {
    std::cerr << "ionet-load: --host '" << host << "' is not an IPv4 or IPv6 literal\n";
    return 2;
  }
  if (threads > cfg.connections) threads = cfg.connections;
  cfg.length_prefix = framing == "length_prefix";

  raise_fd_limit();
  const pattern pat;
  load_clock clock;

  std::vector<std::unique_ptr<worker>> workers;
  for (std::uint32_t t = 0; t < threads; ++t) {
    std::vector<std::uint32_t> ids;
    for (std::uint32_t c = t; c < cfg.connections; c += threads) ids.push_back(c);
    workers.push_back(std::make_unique<worker>(cfg, pat, clock, std::move(ids)));
  }
  std::vector<std::thread> pool;
  for (auto& w : workers) pool.emplace_back([&w] { w->run(); });

  // Connect phase: bounded by --connect-timeout (the workers enforce it).
  const std::int64_t t0 = now_ns();
  const std::int64_t connect_limit =
      t0 + static_cast<std::int64_t>((cfg.connect_timeout_s + 1) * 1e9);
  auto all_connect_done = [&] {
    return std::all_of(workers.begin(), workers.end(), [](const auto& w) {
      return w->connect_phase_done.load(std::memory_order_acquire);
    });
  };
  while (!all_connect_done() && now_ns() < connect_limit) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::uint32_t connected = 0;
  for (auto& w : workers) connected += w->connected.load(std::memory_order_relaxed);

  const std::int64_t begin = now_ns() + static_cast<std::int64_t>(cfg.warmup_s * 1e9);
  const std::int64_t end =
      connected == 0 ? begin : begin + static_cast<std::int64_t>(cfg.duration_s * 1e9);
  clock.measure_begin.store(begin, std::memory_order_relaxed);
  clock.measure_end.store(end, std::memory_order_relaxed);
  std::fprintf(stderr, "ionet-load: %u/%u connected in %.3f s\n", connected,
               cfg.connections, static_cast<double>(now_ns() - t0) / 1e9);

  // Progress each second; CPU samples at the window's edges.
  std::optional<double> server_cpu_begin, server_cpu_end;
  double self_cpu_begin = 0, self_cpu_end = 0;
  bool sampled_begin = false;
  std::uint64_t last_completed = 0;
  std::int64_t last_tick = now_ns();
  std::int64_t next_tick = last_tick + ns_per_s;
  for (;;) {
    std::int64_t wake = std::min(next_tick, end);
    if (!sampled_begin) wake = std::min(wake, begin);
    sleep_until_ns(wake);
    const std::int64_t now = now_ns();
    if (!sampled_begin && now >= begin) {
      sampled_begin = true;
      if (server_pid != 0) server_cpu_begin = process_cpu_seconds(server_pid);
      self_cpu_begin = self_cpu_seconds();
    }
    if (now >= end) {
      if (server_pid != 0) server_cpu_end = process_cpu_seconds(server_pid);
      self_cpu_end = self_cpu_seconds();
      break;
    }
    if (now >= next_tick) {
      std::uint64_t done = 0, trouble = 0;
      std::uint32_t open = 0;
      for (auto& w : workers) {
        done += w->completed.load(std::memory_order_relaxed);
        trouble += w->trouble.load(std::memory_order_relaxed);
        open += w->connected.load(std::memory_order_relaxed);
      }
      const double secs = static_cast<double>(now - last_tick) / 1e9;
      const double rate = static_cast<double>(done - last_completed) / secs;
      std::fprintf(stderr,
                   "ionet-load: %s %5.1f s: %10.0f msg/s %9.2f MiB/s, %u open, "
                   "%llu problems\n",
                   now < begin ? "warmup " : "measure", static_cast<double>(now - t0) / 1e9,
                   rate, rate * cfg.size / (1024.0 * 1024.0), open,
                   static_cast<unsigned long long>(trouble));
      last_completed = done;
      last_tick = now;
      next_tick = now + ns_per_s;
    }
  }
  for (auto& t : pool) t.join();

  load_result total;
  std::vector<std::string> samples;
  for (auto& w : workers) {
    const load_result& r = w->result;
    total.messages += r.messages;
    total.bytes += r.bytes;
    total.corrupted += r.corrupted;
    total.connect_failures += r.connect_failures;
    total.errors += r.errors;
    total.stalled += r.stalled;
    total.latency.merge(r.latency);
    for (const auto& s : r.error_samples) {
      if (samples.size() < 10) samples.push_back(s);
    }
  }
  for (const auto& s : samples) std::fprintf(stderr, "ionet-load: error: %s\n", s.c_str());

  const double window = static_cast<double>(end - begin) / 1e9;
  const double msgs_per_sec = window > 0 ? static_cast<double>(total.messages) / window : 0;
  const double mib_per_sec =
      window > 0 ? static_cast<double>(total.bytes) / window / (1024.0 * 1024.0) : 0;
  auto us = [](std::uint64_t ns) { return round_to(static_cast<double>(ns) / 1e3, 1); };
  nlohmann::json out = {
      {"connections", cfg.connections},
      {"connected", connected},
      {"size", cfg.size},
      {"inflight", cfg.inflight},
      {"framing", framing},
      {"threads", threads},
      {"warmup_s", cfg.warmup_s},
      {"duration_s", round_to(window, 3)},
      {"messages", total.messages},
      {"bytes", total.bytes},
      {"msgs_per_sec", round_to(msgs_per_sec, 1)},
      {"mib_per_sec", round_to(mib_per_sec, 3)},
      {"latency_us",
       {{"p50", us(total.latency.quantile(0.50))},
        {"p99", us(total.latency.quantile(0.99))},
        {"p999", us(total.latency.quantile(0.999))},
        {"max", us(total.latency.max())}}},
      {"corrupted_bytes", total.corrupted},
      {"connect_failures", total.connect_failures},
      {"errors", total.errors},
      {"stalled_connections", total.stalled},
      {"client_cpu_s", round_to(self_cpu_end - self_cpu_begin, 3)},
  };
  if (server_cpu_begin && server_cpu_end) {
    const double cpu = *server_cpu_end - *server_cpu_begin;
    out["server_cpu_s"] = round_to(cpu, 3);
    out["server_cpu_us_per_msg"] =
        total.messages > 0 ? round_to(cpu * 1e6 / static_cast<double>(total.messages), 3)
                           : 0.0;
  }
  std::cout << out.dump() << std::endl;

  if (total.messages == 0) std::fprintf(stderr, "ionet-load: no message was echoed\n");
  const bool failed = total.corrupted > 0 || total.connect_failures > 0 ||
                      total.errors > 0 || total.stalled > 0 || total.messages == 0;
  return failed ? 1 : 0;
}
