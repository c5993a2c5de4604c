#include "backends/iocp/winsock.hpp"

#include <cstring>
#include <mutex>

#include "ionet/error.hpp"

namespace ionet::iocp {

std::error_code winsock_init() noexcept {
  // Never WSACleanup: other code in the process may use Winsock, and the
  // process's exit releases it anyway.
  static const int result = [] {
    WSADATA data;
    return WSAStartup(MAKEWORD(2, 2), &data);
  }();
  return result == 0 ? std::error_code{} : wsa_error(result);
}

bool running_under_wine() noexcept {
  static const bool wine = [] {
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    return ntdll && GetProcAddress(ntdll, "wine_get_version") != nullptr;
  }();
  return wine;
}

namespace {

template <class Fn>
bool fetch(SOCKET s, GUID guid, Fn& out) {
  DWORD bytes = 0;
  return WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid,
                  &out, sizeof out, &bytes, nullptr, nullptr) == 0 &&
         out != nullptr;
}

}  // namespace

std::error_code load_extensions(SOCKET s, extensions& ext, std::string& which) {
  const GUID accept_guid = WSAID_ACCEPTEX;
  const GUID addrs_guid = WSAID_GETACCEPTEXSOCKADDRS;
  const GUID disconnect_guid = WSAID_DISCONNECTEX;
  const GUID connect_guid = WSAID_CONNECTEX;
  if (!fetch(s, accept_guid, ext.accept_ex)) {
    which = "AcceptEx";
  } else if (!fetch(s, addrs_guid, ext.get_accept_ex_sockaddrs)) {
    which = "GetAcceptExSockaddrs";
  } else if (!fetch(s, disconnect_guid, ext.disconnect_ex)) {
    which = "DisconnectEx";
  } else if (!fetch(s, connect_guid, ext.connect_ex)) {
    which = "ConnectEx";
  } else {
    return {};
  }
  return wsa_error(WSAGetLastError());
}

bool provider_is_ifs(SOCKET s) noexcept {
  WSAPROTOCOL_INFOW info{};
  int len = sizeof info;
  if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW,
                 reinterpret_cast<char*>(&info), &len) != 0) {
    return false;
  }
  return (info.dwServiceFlags1 & XP1_IFS_HANDLES) != 0;
}

SOCKET open_tcp_socket(int family) noexcept {
  return WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                    WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
}

std::error_code close_reason_of(DWORD error) noexcept {
  switch (error) {
    case WSAECONNRESET:
    case WSAECONNABORTED:
    case WSAENETRESET:
    case WSAENETDOWN:
    case WSAENETUNREACH:
    case WSAEHOSTUNREACH:
    case WSAETIMEDOUT:
    case WSAESHUTDOWN:
    case WSAENOTCONN:
    case WSAEDISCON:
    case ERROR_NETNAME_DELETED:
    case ERROR_CONNECTION_ABORTED:
    case ERROR_OPERATION_ABORTED:
      return make_error_code(errc::connection_reset);
    default:
      return wsa_error(static_cast<int>(error));
  }
}

std::error_code connect_reason_of(DWORD error) noexcept {
  switch (error) {
    case WSAECONNREFUSED:
    case ERROR_CONNECTION_REFUSED:
      return make_error_code(errc::connection_refused);
    case WSAETIMEDOUT:
    case ERROR_SEM_TIMEOUT:
      return make_error_code(errc::connect_timeout);
    case WSAENETUNREACH:
    case WSAEHOSTUNREACH:
    case ERROR_NETWORK_UNREACHABLE:
    case ERROR_HOST_UNREACHABLE:
      return make_error_code(errc::host_unreachable);
    default:
      return close_reason_of(error);
  }
}

int bind_any(SOCKET s, int family) noexcept {
  sockaddr_storage ss{};
  int len;
  if (family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;  // the address stays all zeros: in6addr_any
    len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;  // INADDR_ANY
    len = sizeof(sockaddr_in);
  }
  return bind(s, reinterpret_cast<const sockaddr*>(&ss), len) == 0
             ? 0
             : WSAGetLastError();
}

void set_keepalive(SOCKET s, const options& o) noexcept {
  if (o.keepalive_idle.count() <= 0) return;
  tcp_keepalive k{};
  k.onoff = 1;
  k.keepalivetime = static_cast<ULONG>(o.keepalive_idle.count() * 1000);
  k.keepaliveinterval = static_cast<ULONG>(o.keepalive_interval.count() * 1000);
  DWORD bytes = 0;
  WSAIoctl(s, SIO_KEEPALIVE_VALS, &k, sizeof k, nullptr, 0, &bytes, nullptr,
           nullptr);
}

endpoint endpoint_of(const sockaddr* sa) noexcept {
  endpoint ep;
  if (!sa) return ep;
  if (sa->sa_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(sa);
    ep.v6 = true;
    std::memcpy(ep.bytes.data(), &a->sin6_addr, 16);
    ep.port = ntohs(a->sin6_port);
  } else if (sa->sa_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(sa);
    std::memcpy(ep.bytes.data(), &a->sin_addr, 4);
    ep.port = ntohs(a->sin_port);
  }
  return ep;
}

std::optional<endpoint> address_of(SOCKET s, bool local) noexcept {
  if (s == INVALID_SOCKET) return std::nullopt;
  sockaddr_storage ss{};
  int len = sizeof ss;
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if ((local ? getsockname(s, sa, &len) : getpeername(s, sa, &len)) != 0)
    return std::nullopt;
  return endpoint_of(sa);
}

int to_sockaddr(const endpoint& ep, sockaddr_storage& ss) noexcept {
  std::memset(&ss, 0, sizeof ss);
  if (ep.v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(ep.port);
    std::memcpy(&a->sin6_addr, ep.bytes.data(), 16);
    return sizeof(sockaddr_in6);
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(ep.port);
  std::memcpy(&a->sin_addr, ep.bytes.data(), 4);
  return sizeof(sockaddr_in);
}

DWORD overlapped_result(SOCKET s, OVERLAPPED* ov, DWORD& bytes) noexcept {
  DWORD flags = 0;
  bytes = 0;
  if (WSAGetOverlappedResult(s, ov, &bytes, FALSE, &flags)) return 0;
  const int err = WSAGetLastError();
  return err == 0 ? ERROR_OPERATION_ABORTED : static_cast<DWORD>(err);
}

}  // namespace ionet::iocp
