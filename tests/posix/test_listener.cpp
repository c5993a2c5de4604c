// Tests of the Linux backends (libuv, io_uring) that reach the engine's
// sockets from outside, through the OS, as other code in the process (or a
// security module) can: what the conformance suite, public API only,
// cannot do.
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.hpp"

using namespace ionet_test;

namespace {

// The descriptor listening on `port` on 127.0.0.1: the engine's listener.
int listener_on(std::uint16_t port) {
  for (int fd = 0; fd < 4096; ++fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 ||
        !listening) {
      continue;
    }
    sockaddr_in a{};
    socklen_t alen = sizeof a;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &alen) == 0 &&
        a.sin_family == AF_INET && ntohs(a.sin_port) == port) {
      return fd;
    }
  }
  return -1;
}

// CPU time of the whole process (every thread), in seconds.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto secs = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return secs(u.ru_utime) + secs(u.ru_stime);
}

// CPU seconds the process spends over `span` of wall time.
double cpu_over(std::chrono::milliseconds span) {
  const double before = cpu_seconds();
  std::this_thread::sleep_for(span);
  return cpu_seconds() - before;
}

}  // namespace

TEST_CASE("listener: an accept error that persists does not spin the loop",
          "[posix][accept]") {
  server s;
  REQUIRE(s.start().ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, s.port()).ok());
  REQUIRE(s.wait_connected(1));
  const double idle = cpu_over(1000ms);  // the engine's own idle cost

  // shutdown(SHUT_RD) on a listening TCP socket ends its listening: from
  // then on poll() reports it hung up (readable, for libuv), and every
  // accept fails with EINVAL, for good. A security module refusing
  // accept() (EPERM, EACCES) leaves the listener readable the same way.
  const int fd = listener_on(s.port());
  REQUIRE(fd >= 0);
  REQUIRE(::shutdown(fd, SHUT_RD) == 0);
  std::this_thread::sleep_for(200ms);  // the first failures
  const std::uint64_t failed_before = s.engine().stats().accept_failures;
  const double used = cpu_over(1000ms);
  const std::uint64_t failed =
      s.engine().stats().accept_failures - failed_before;
  INFO("CPU seconds over 1 s: idle " << idle << ", listener failing " << used
                                     << "; accepts failed: " << failed);
  // Retrying at once spins a loop thread: close to a second of CPU each
  // second. Counted where the backend counts them (libuv does not).
  CHECK(used < idle + 0.25);
  CHECK(failed < 200);

  // The connection already open is served as before, and stop() ends.
  CHECK_FALSE(echo_roundtrip(c, pattern(1000, 7)));
  s.stop();
}
