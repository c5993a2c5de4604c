// An overlapped operation: the OVERLAPPED the kernel fills, followed by what
// a worker needs to finish the operation without a lookup. The port hands
// back the OVERLAPPED's address, which is the operation's (OVERLAPPED is the
// first member). Completion goes through a function pointer rather than a
// virtual call: the operation stays a plain, pre-allocated struct whose
// layout the kernel relies on, and dispatch costs one indirect call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "backends/iocp/winsock.hpp"
#include "common/slab_pool.hpp"

namespace ionet::iocp {

class engine_impl;
struct operation;

enum class op_kind : std::uint8_t {
  accept,      // AcceptEx on the listening socket
  read_ready,  // zero-byte WSARecv: data (or EOF) is waiting
  read,        // WSARecv into slices
  write,       // WSASend gathering slices
  disconnect,  // DisconnectEx(TF_REUSE_SOCKET)
  posted,      // a hand-off through PostQueuedCompletionStatus
  // engine::connect(): the packet that has a worker begin the connect
  // (posted), then the ConnectEx itself, on the same operation.
  begin_connect,
  connect,
};

// What a worker learned from the port about one operation.
struct completion {
  DWORD error = 0;  // 0, or a Winsock/Windows error number
  DWORD bytes = 0;
  ULONG_PTR key = 0;  // posted packets: the connection id
};

using complete_fn = void (*)(engine_impl&, operation&, const completion&);

struct operation {
  OVERLAPPED ov{};
  complete_fn complete = nullptr;
  op_kind kind = op_kind::posted;
  // The connection slot (read, write, connect) or accept-pool entry
  // (accept, disconnect) the operation belongs to, and the generation of the
  // connection when it was issued.
  std::uint32_t owner = 0;
  std::uint32_t generation = 0;
  // The socket it was issued on, to ask for its result.
  SOCKET socket = INVALID_SOCKET;
  // Slices the operation owns until its completion is processed.
  detail::slice_chain buffers;

  // Makes the OVERLAPPED ready for a new call (it must be zero).
  void prepare(op_kind k, SOCKET s) noexcept {
    std::memset(&ov, 0, sizeof ov);
    kind = k;
    socket = s;
  }
};

static_assert(offsetof(operation, ov) == 0,
              "the port returns &ov, which must be the operation");

}  // namespace ionet::iocp
