// One load thread: its own epoll instance and its share of the
// connections, driven in a closed loop (each connection keeps `inflight`
// messages outstanding and sends a new one when one has fully come back).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>

#include "load/histogram.hpp"
#include "load/pattern.hpp"

namespace ionet_bench {

struct load_config {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::uint32_t connections = 100;
  std::uint32_t size = 64;
  std::uint32_t inflight = 1;
  bool length_prefix = true;
  double connect_timeout_s = 10;
  double warmup_s = 1;
  double duration_s = 5;
  // An open connection whose oldest outstanding message has been waiting
  // this long when the run ends counts as stalled (lost echo bytes).
  double stall_s = 2;
};

// Written by the main thread, read by the workers. Times are
// steady_clock nanoseconds; 0 means "not decided yet".
struct load_clock {
  std::atomic<std::int64_t> measure_begin{0};
  std::atomic<std::int64_t> measure_end{0};
  std::atomic<bool> abort{false};
};

struct load_result {
  std::uint64_t messages = 0;  // completed inside the measured window
  std::uint64_t bytes = 0;     // their payload bytes
  std::uint64_t corrupted = 0;
  std::uint64_t connect_failures = 0;
  std::uint64_t errors = 0;
  std::uint64_t stalled = 0;
  std::uint32_t connected = 0;
  histogram latency;
  std::vector<std::string> error_samples;  // the first few, for stderr
};

std::int64_t now_ns() noexcept;

class worker {
 public:
  worker(const load_config& cfg, const pattern& pat, load_clock& clock,
         std::vector<std::uint32_t> conn_ids);
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  // The thread body; returns when the measured window is over, on abort,
  // or at a hard deadline.
  void run();

  // Live progress for the main thread.
  std::atomic<std::uint64_t> completed{0};  // every echoed message, warmup too
  std::atomic<std::uint32_t> connected{0};
  std::atomic<std::uint64_t> trouble{0};  // errors + connect failures + corruption
  std::atomic<bool> connect_phase_done{false};

  // Valid after run() returned.
  load_result result;

 private:
  struct conn;

  void open_all();
  void on_event(conn& c, std::uint32_t events, std::int64_t now);
  void on_connected(conn& c, std::int64_t now);
  void on_readable(conn& c);
  void consume(conn& c, const std::uint8_t* data, std::size_t n, std::int64_t now);
  void complete(conn& c, std::uint64_t msg, std::int64_t now);
  void queue_message(conn& c, std::int64_t now);
  void flush(conn& c);
  void set_interest(conn& c, bool want_out);
  void fail(conn& c, const std::string& what, bool connect_failure);
  void check_connect_phase(std::int64_t now);
  void check_stalls(std::int64_t now);
  bool sending_allowed(std::int64_t now) const noexcept;

  const load_config& cfg_;
  const pattern& pat_;
  load_clock& clock_;
  std::vector<conn> conns_;
  int epfd_ = -1;
  std::uint32_t connecting_ = 0;
  std::int64_t started_ = 0;
  std::size_t frame_bytes_ = 0;
  std::size_t header_bytes_ = 0;
  std::vector<std::uint8_t> rbuf_;
};

}  // namespace ionet_bench
