// winsim: the subset of <mswsock.h> the IOCP backend calls: the extension
// functions a program fetches with WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)
// and the socket options that go with them.
#pragma once

#include "winsock2.h"

#define SO_UPDATE_ACCEPT_CONTEXT 0x700B
#define SO_UPDATE_CONNECT_CONTEXT 0x7010
#define TF_DISCONNECT 0x01
#define TF_REUSE_SOCKET 0x02

using LPFN_ACCEPTEX = BOOL (*)(SOCKET listen_socket, SOCKET accept_socket,
                               PVOID output, DWORD receive_bytes,
                               DWORD local_address_bytes,
                               DWORD remote_address_bytes, LPDWORD received,
                               LPOVERLAPPED ov);
using LPFN_GETACCEPTEXSOCKADDRS = void (*)(PVOID output, DWORD receive_bytes,
                                           DWORD local_address_bytes,
                                           DWORD remote_address_bytes,
                                           sockaddr** local, int* local_length,
                                           sockaddr** remote,
                                           int* remote_length);
using LPFN_DISCONNECTEX = BOOL (*)(SOCKET s, LPOVERLAPPED ov, DWORD flags,
                                   DWORD reserved);
using LPFN_CONNECTEX = BOOL (*)(SOCKET s, const sockaddr* name, int namelen,
                                PVOID send_buffer, DWORD send_bytes,
                                LPDWORD sent, LPOVERLAPPED ov);

#define WSAID_ACCEPTEX                               \
  {                                                  \
    0xb5367df1, 0xcbac, 0x11cf, {                    \
      0x95, 0xca, 0x00, 0x80, 0x5f, 0x48, 0xa1, 0x92 \
    }                                                \
  }
#define WSAID_GETACCEPTEXSOCKADDRS                   \
  {                                                  \
    0xb5367df2, 0xcbac, 0x11cf, {                    \
      0x95, 0xca, 0x00, 0x80, 0x5f, 0x48, 0xa1, 0x92 \
    }                                                \
  }
#define WSAID_DISCONNECTEX                           \
  {                                                  \
    0x7fda2e11, 0x8630, 0x436f, {                    \
      0xa0, 0x31, 0xf5, 0x36, 0xa6, 0xee, 0xc1, 0x57 \
    }                                                \
  }
#define WSAID_CONNECTEX                              \
  {                                                  \
    0x25a207b9, 0xddf3, 0x4660, {                    \
      0x8e, 0xe9, 0x76, 0xe5, 0x8c, 0x74, 0x06, 0x3e \
    }                                                \
  }
