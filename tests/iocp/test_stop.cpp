// IOCP backend: stop() right after a burst of connects.
#include <io.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace ionet_test;

namespace {

// Whatever is written to fd 2 (the engine's stderr) between construction
// and text() goes to a temporary file instead.
class stderr_capture {
 public:
  stderr_capture() : file_(std::tmpfile()) {
    std::fflush(stderr);
    saved_ = _dup(2);
    if (file_ && saved_ >= 0) _dup2(_fileno(file_), 2);
  }
  ~stderr_capture() { restore(); }
  std::string text() {
    restore();
    std::string out;
    if (!file_) return "(no temporary file for stderr)";
    std::rewind(file_);
    char buf[512];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, file_)) > 0;) out.append(buf, n);
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    _dup2(saved_, 2);
    _close(saved_);
    saved_ = -1;
  }
  std::FILE* file_;
  int saved_ = -1;
};

}  // namespace

TEST_CASE("iocp: stop() right after a burst of connects takes under 1 s and says nothing",
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
    said = capture.text();
  }
  INFO("rounds " << done << ", longest stop() "
                 << std::chrono::duration_cast<std::chrono::milliseconds>(longest).count()
                 << " ms; the engine wrote to stderr: \"" << said << "\"");
  CHECK(connect_failures == 0);
  CHECK(slow == 0);
  CHECK(longest < 1s);
  CHECK(said.empty());
}
