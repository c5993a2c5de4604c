// winsim: <ws2tcpip.h>. IPPROTO_IPV6 and IPV6_V6ONLY come from Linux's
// headers (see winsock2.h for why), which winsock2.h already includes.
#pragma once

#include "winsock2.h"
