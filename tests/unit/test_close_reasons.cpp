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
#endif
