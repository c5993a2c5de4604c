// winsim: the subset of <mstcpip.h> the IOCP backend calls.
#pragma once

#include "winsock2.h"

// SIO_KEEPALIVE_VALS: keepalive on or off, the idle time before the first
// probe and the interval between probes, both in milliseconds.
struct tcp_keepalive {
  ULONG onoff;
  ULONG keepalivetime;
  ULONG keepaliveinterval;
};
#define SIO_KEEPALIVE_VALS _WSAIOW(IOC_VENDOR, 4)
