// The Linux backends' close reasons for a failed socket call: what the peer
// or the network did is connection_reset; anything else keeps its native
// errno, so an unusual failure is not hidden behind a reset.
#if !defined(_WIN32)
#include <cerrno>

#include "backends/posix/sockets.hpp"
#include "catch.hpp"

TEST_CASE("close reasons: resets are named, other errors stay native",
          "[unit][close_reasons]") {
  for (const int err :
       {ECONNRESET, EPIPE, ECONNABORTED, ETIMEDOUT, ENOTCONN, ECANCELED}) {
    INFO("errno " << err);
    CHECK(ionet::posix::close_reason_of(err) == ionet::errc::connection_reset);
  }
  for (const int err : {EIO, EBADF, ENOBUFS, EHOSTUNREACH, ENETDOWN}) {
    INFO("errno " << err);
    const std::error_code ec = ionet::posix::close_reason_of(err);
    CHECK(ec.category() == std::system_category());
    CHECK(ec.value() == err);
  }
}

TEST_CASE("close reasons: a failed connect is named", "[unit][close_reasons]") {
  CHECK(ionet::posix::connect_reason_of(ECONNREFUSED) ==
        ionet::errc::connection_refused);
  CHECK(ionet::posix::connect_reason_of(ETIMEDOUT) ==
        ionet::errc::connect_timeout);
  CHECK(ionet::posix::connect_reason_of(ENETUNREACH) ==
        ionet::errc::host_unreachable);
  CHECK(ionet::posix::connect_reason_of(EHOSTUNREACH) ==
        ionet::errc::host_unreachable);
  // Anything else, as any failed call: a reset, or the native code.
  CHECK(ionet::posix::connect_reason_of(ECONNRESET) ==
        ionet::errc::connection_reset);
  CHECK(ionet::posix::connect_reason_of(EACCES) ==
        std::error_code(EACCES, std::system_category()));
}
#endif
