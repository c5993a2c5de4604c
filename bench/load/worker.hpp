// One load thread: its own epoll instance and its share of the
// connections. What it does with them depends on the mode:
//   echo, closed loop: each connection keeps `inflight` messages
//     outstanding and sends a new one when one has fully come back;
//   echo, open loop (rate > 0): each connection sends on a fixed schedule,
//     and latency runs from the intended send time (see run_schedule());
//   connect_burst: connect, record how long each connect took, close;
//   idle: connect, hold the connections silent, then probe each with one
//     message whose echo must come back intact.
// Connects are paced so that at most `connect_inflight` are in flight.
#pragma once

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "load/histogram.hpp"
#include "load/pattern.hpp"

namespace ionet_bench {

enum class load_mode : std::uint8_t { echo, connect_burst, idle };

struct load_config {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  load_mode mode = load_mode::echo;
  std::uint32_t connections = 100;
  std::uint32_t size = 64;
  std::uint32_t inflight = 1;  // open loop: the cap of outstanding messages
  bool length_prefix = true;
  double connect_timeout_s = 10;
  double warmup_s = 1;
  double duration_s = 5;
  // An open connection whose oldest outstanding message has been waiting
  // this long when the run ends counts as stalled (lost echo bytes). In
  // idle mode it is also how long the probe echoes may take.
  double stall_s = 2;
  double rate = 0;  // messages per second over all connections; 0 = closed loop
  double hold_s = 0;
  std::uint32_t connect_inflight = 1024;  // per worker
  // 0: let the kernel choose the source address. N > 0: connection i binds
  // to 127.0.0.(2 + i % N) first.
  std::uint32_t source_addresses = 0;
};

// Written by the main thread, read by the workers. Times are
// steady_clock nanoseconds; 0 means "not decided yet".
struct load_clock {
  std::atomic<std::int64_t> measure_begin{0};
  std::atomic<std::int64_t> measure_end{0};
  // Open loop: time 0 of every connection's schedule. Stored last (release),
  // so a worker that sees it also sees measure_begin and measure_end.
  std::atomic<std::int64_t> schedule_start{0};
  std::atomic<bool> probe{false};   // idle: the hold is over, probe now
  std::atomic<bool> finish{false};  // connect_burst: close and return
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
  histogram connect_latency;  // connect() call to established
  // When this worker's last connect attempt was settled (established,
  // failed or timed out); 0 if it never was.
  std::int64_t connect_done_at = 0;
  // Open loop, over the messages whose intended time is in the window.
  std::uint64_t sends = 0;
  std::uint64_t late_sends = 0;     // sent more than 1 ms after intended
  std::uint64_t skipped_sends = 0;  // not sent: connection at the cap
  histogram send_lag;               // actual send time - intended send time
  // Idle mode.
  std::uint32_t open_after_hold = 0;
  std::uint64_t echoed = 0;                // probe echoes that came back whole
  std::vector<std::string> error_samples;  // the first of each kind, a few
};

std::int64_t now_ns() noexcept;

class worker {
 public:
  worker(const load_config& cfg, const pattern& pat, load_clock& clock,
         std::vector<std::uint32_t> conn_ids);
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  // The thread body; returns when the mode's work is over, on abort, or at
  // a hard deadline. Every connection is closed before it returns.
  void run();

  // Live progress for the main thread.
  std::atomic<std::uint64_t> completed{0};  // every echoed message, warmup too
  std::atomic<std::uint32_t> connected{0};
  std::atomic<std::uint64_t> trouble{
      0};  // errors + connect failures + corruption
  std::atomic<std::uint64_t> connect_failed{0};
  std::atomic<std::uint64_t> late_or_skipped{0};  // open loop, warmup too
  std::atomic<bool> connect_phase_done{false};
  std::atomic<bool> finished{false};

  // Valid after run() returned (finished is true).
  load_result result;

 private:
  struct conn;

  bool start_connects(std::int64_t now);
  void open_one(conn& c);
  bool bind_source(conn& c);
  void on_event(conn& c, std::uint32_t events, std::int64_t now);
  void on_connected(conn& c, std::int64_t now);
  void on_readable(conn& c);
  void consume(conn& c, const std::uint8_t* data, std::size_t n,
               std::int64_t now);
  void complete(conn& c, std::uint64_t msg, std::int64_t now);
  void queue_message(conn& c, std::int64_t sent_at);
  void flush(conn& c);
  void set_interest(conn& c, bool want_out);
  void fail(conn& c, const std::string& what, bool connect_failure);
  void note_error(const std::string& what);
  void add_sample(const std::string& text, const std::string& kind);
  void check_connect_phase(std::int64_t now);
  void check_stalls(std::int64_t now);
  bool sending_allowed(std::int64_t now) const noexcept;
  std::int64_t run_schedule(std::int64_t now);
  std::int64_t intended_time(const conn& c) const noexcept;
  bool run_idle(std::int64_t now, std::int64_t& wake);
  bool wait_events(std::int64_t now, std::int64_t wake);
  void close_all();

  const load_config& cfg_;
  const pattern& pat_;
  load_clock& clock_;
  std::vector<conn> conns_;
  int epfd_ = -1;
  bool have_pwait2_ = true;
  std::uint32_t connecting_ = 0;
  std::size_t next_open_ = 0;  // conns_[next_open_..] have not been tried yet
  std::int64_t started_ = 0;
  std::size_t frame_bytes_ = 0;
  std::size_t header_bytes_ = 0;
  std::vector<std::uint8_t> rbuf_;
  std::vector<epoll_event> events_;
  // Open loop.
  std::int64_t schedule_start_ = 0;
  double ns_per_msg_ = 0;   // 1e9 / rate: the gap between two sends overall
  std::size_t cursor_ = 0;  // the connection whose send is due next
  std::int64_t next_due_ = std::numeric_limits<std::int64_t>::max();
  // Idle.
  bool probed_ = false;
  std::int64_t probe_deadline_ = 0;
};

}  // namespace ionet_bench
