// IOCP backend: stop() right after a burst of connects, and a connect that
// arrives while the engine stops.
// The test's own OS calls (stderr redirection, process CPU time) differ
// between Windows and the simulator build on Linux; the engine's do not.
#if defined(_WIN32)
#include <io.h>
#include <windows.h>
#define ionet_dup _dup
#define ionet_dup2 _dup2
#define ionet_close _close
#define ionet_fileno _fileno
#else
#include <sys/resource.h>
#include <unistd.h>
#define ionet_dup dup
#define ionet_dup2 dup2
#define ionet_close close
#define ionet_fileno fileno
#endif

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "process_cpu.hpp"
#include "support.hpp"

using namespace ionet_test;

namespace {

// Whatever is written to fd 2 (the engine's stderr) between construction
// and text() goes to a temporary file instead.
class stderr_capture {
 public:
  stderr_capture() : file_(std::tmpfile()) {
    std::fflush(stderr);
    saved_ = ionet_dup(2);
    if (file_ && saved_ >= 0) ionet_dup2(ionet_fileno(file_), 2);
  }
  ~stderr_capture() { restore(); }
  std::string text() {
    restore();
    std::string out;
    if (!file_) return "(no temporary file for stderr)";
    std::rewind(file_);
    char buf[512];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, file_)) > 0;)
      out.append(buf, n);
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ionet_dup2(saved_, 2);
    ionet_close(saved_);
    saved_ = -1;
  }
  std::FILE* file_;
  int saved_ = -1;
};

// What the engine wrote, without the simulated Winsock's own lines (under
// injected faults it names its seed once, at its first decision).
std::string engine_lines(const std::string& text) {
  std::string kept;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    end = end == std::string::npos ? text.size() : end + 1;
    if (text.compare(at, 8, "winsim: ") != 0) kept.append(text, at, end - at);
    at = end;
  }
  return kept;
}

}  // namespace

TEST_CASE(
    "iocp: stop() right after a burst of connects takes under 1 s and says nothing",
    "[iocp][stop]") {
  // The accepts of the last connects may still be completing (and posting
  // replacements) when stop() begins: nothing may be posted after the
  // listener's cancel, and no connection may open in a slot already swept.
  const int rounds = 200;
  constexpr int threads = 8;
  constexpr int per_thread = 16;
  int slow = 0;
  int connect_failures = 0;
  auto longest = steady::duration::zero();
  int done = 0;
  std::string said;
  {
    stderr_capture capture;
    for (; done < rounds && slow < 3; ++done) {
      ionet::options o = local_options();
      o.accept_depth = 8;
      auto eng = ionet::make_engine(o);
      if (!eng->start().ok()) {
        ++connect_failures;
        break;
      }
      std::vector<std::vector<ionet::framed_client>> clients(threads);
      std::vector<std::thread> workers;
      std::atomic<int> failed{0};
      for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          auto& mine = clients[static_cast<std::size_t>(t)];
          mine.resize(per_thread);
          for (auto& c : mine) {
            if (!connect_client(c, eng->port())) failed.fetch_add(1);
          }
        });
      }
      for (auto& w : workers) w.join();
      connect_failures += failed.load();
      const auto t0 = steady::now();
      eng->stop();
      const auto took = steady::now() - t0;
      longest = std::max(longest, took);
      if (took >= 1s) ++slow;
      eng.reset();
    }
    said = engine_lines(capture.text());
  }
  INFO("rounds "
       << done << ", longest stop() "
       << std::chrono::duration_cast<std::chrono::milliseconds>(longest).count()
       << " ms; the engine wrote to stderr: \"" << said << "\"");
  CHECK(connect_failures == 0);
  CHECK(slow == 0);
  CHECK(longest < 1s);
  CHECK(said.empty());
}

TEST_CASE(
    "iocp: a connect while the engine stops does not make the housekeeper spin",
    "[iocp][stop]") {
  // An inline handler calls stop(): the stop begins, every connection is
  // closed, and the engine waits for the user's stop() to join it. A client
  // that connects meanwhile finds no accept posted: the listener signals
  // FD_ACCEPT, which nobody takes any more.
  ionet::options o = local_options();
  o.threads = 2;
  o.handler = [](ionet::engine& eng, const ionet::event& ev) {
    if (ev.type == ionet::event_type::message) eng.stop();
  };
  auto eng = ionet::make_engine(o);
  REQUIRE(eng->start().ok());
  ionet::framed_client first;
  REQUIRE(connect_client(first, eng->port()).ok());
  REQUIRE_FALSE(first.write(pattern(8, 1)));
  const std::error_code ec = read_until_closed(first);  // closed by the stop
  REQUIRE_FALSE(is_timeout(ec));
  ionet::framed_client late;
  REQUIRE(connect_client(late, eng->port()).ok());  // the backlog takes it
  std::this_thread::sleep_for(200ms);
  const auto cpu0 = process_cpu();
  const auto t0 = steady::now();
  std::this_thread::sleep_for(1500ms);
  const auto cpu = process_cpu() - cpu0;
  const auto wall =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0);
  INFO("process CPU " << cpu.count() << " ms in " << wall.count() << " ms");
  // Idle, the engine's threads wait (measured: ~10 ms in 1.5 s under Wine).
  // A spinning housekeeper costs this process ~25% of a CPU under Wine (the
  // wineserver, another process, takes the rest of each wait's cost), far
  // more on Windows.
  CHECK(cpu < wall / 10);
  eng->stop();
}
