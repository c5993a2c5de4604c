// framed_client's framing and ownership, above the socket calls that each
// platform provides (backends/posix/framed_client.cpp,
// backends/iocp/framed_client.cpp): connect, write_raw, read_some,
// shutdown_send, reset, close.
#include "ionet/framed_client.hpp"

#include <algorithm>
#include <cstring>

#include "common/framing.hpp"

namespace ionet {

using clock = std::chrono::steady_clock;

framed_client::~framed_client() { close(); }

framed_client::framed_client(framed_client&& other) noexcept : fd_(other.fd_) {
  other.fd_ = invalid;
}

framed_client& framed_client::operator=(framed_client&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.fd_;
    other.fd_ = invalid;
  }
  return *this;
}

std::error_code framed_client::write(std::span<const std::byte> message) {
  std::byte header[detail::header_bytes];
  detail::put_header(header, static_cast<std::uint32_t>(message.size()));
  if (message.size() <= 4096) {
    // One send for small messages: header and payload in one segment.
    std::byte buf[detail::header_bytes + 4096];
    std::memcpy(buf, header, sizeof header);
    if (!message.empty())
      std::memcpy(buf + sizeof header, message.data(), message.size());
    return write_raw({buf, sizeof header + message.size()});
  }
  if (auto ec = write_raw(header)) return ec;
  return write_raw(message);
}

std::error_code framed_client::read_exact(std::span<std::byte> out,
                                          std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  while (!out.empty()) {
    // Rounded up, and never below zero: with no time left the socket is
    // still looked at once, so bytes already there are taken.
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    std::size_t got = 0;
    if (auto ec = read_some(out, got, left)) return ec;
    out = out.subspan(got);
  }
  return {};
}

std::error_code framed_client::read(std::vector<std::byte>& out,
                                    std::chrono::milliseconds timeout,
                                    std::uint32_t max_bytes) {
  const auto deadline = clock::now() + timeout;
  std::byte header[detail::header_bytes];
  if (auto ec = read_exact(header, timeout)) return ec;
  const std::uint32_t length = detail::get_header(header);
  if (length > max_bytes) return make_error_code(errc::message_too_large);
  out.resize(length);
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - clock::now());
  return read_exact(out, std::max(left, std::chrono::milliseconds(1)));
}

}  // namespace ionet
