#!/usr/bin/env python3
"""Smoke tests of the example programs (examples/*.cpp), run by ctest.

    smoke.py --binary PATH CHECK

starts the program with --port 0, waits for its 'listening on HOST:PORT'
line, runs CHECK against it over the loopback interface, then sends SIGTERM
and expects exit status 0. Exit status: 0 passed, 1 failed, 77 skipped
(the reason on stdout). Every wait is bounded (WAIT seconds), and every
loop by a count: nothing here sleeps to let the server catch up.
Standard library only."""

import argparse
import email.utils
import queue
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

WAIT = 10.0  # the longest any one step may wait (sanitizer builds are slow)
SKIP = 77


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


class Server:
    """The program under test, listening on a port it chose."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen(
            [binary, "--port", "0", *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Readers on threads, so waiting for a line has a timeout and a
        # chatty stderr cannot block the server.
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.stderr_reader = threading.Thread(target=self._read_stderr,
                                              daemon=True)
        self.stderr_reader.start()
        try:
            line = self.lines.get(timeout=WAIT)
        except queue.Empty:
            self.kill()
            raise Failure(f"no 'listening on' line within {WAIT} s")
        if line is None:
            raise Failure(f"exited with status {self.proc.wait()} before "
                          f"listening: {''.join(self.stderr)}")
        m = re.fullmatch(r"listening on (\S+):(\d+)\n", line)
        check(m, f"first line is {line!r}, not 'listening on HOST:PORT'")
        self.host, self.port = m.group(1), int(m.group(2))
        check(0 < self.port < 65536, f"port {self.port}")

    def _read_stdout(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self):
        """SIGTERM; the program must exit 0 within WAIT seconds."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure(f"still running {WAIT} s after SIGTERM")
        self.stderr_reader.join(WAIT)
        sys.stdout.write("server's stderr:\n" + "".join(self.stderr))
        check(status == 0, f"exit status {status} after SIGTERM, not 0")

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.stop()
        else:
            self.kill()
            sys.stdout.write("server's stderr:\n" + "".join(self.stderr))
        return False


def connect(port, host="127.0.0.1", rcvbuf=None):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connect, so the window is small from the start.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(WAIT)
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = s.recv_into(view[got:])
        check(k > 0, f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def expect_closed(s, what):
    """The server closed `s` (EOF or reset) without sending anything."""
    try:
        data = s.recv(65536)
    except ConnectionResetError:
        return
    except socket.timeout:
        raise Failure(f"{what}: still open after {WAIT} s")
    check(data == b"", f"{what}: got {data[:80]!r} instead of the end")


# --- length_prefix framing (echo, chat) --------------------------------------

def send_msg(s, payload):
    s.sendall(struct.pack(">I", len(payload)) + payload)


def recv_msg(s):
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    return recv_exact(s, n)


# --- flags, shared by every program ------------------------------------------

def run(binary, *args):
    return subprocess.run([binary, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=WAIT)


def check_flags(binary):
    r = run(binary, "--help")
    check(r.returncode == 0 and "usage:" in r.stdout,
          f"--help: status {r.returncode}, stdout {r.stdout!r}")
    r = run(binary, "--version")
    check(r.returncode == 0 and
          re.fullmatch(r"ionet-example-\w+ \d+\.\d+\.\d+\n", r.stdout),
          f"--version: status {r.returncode}, stdout {r.stdout!r}")
    for bad in (["--bogus"], ["--port"], ["--port", "65536"], ["--port=x"],
                ["--threads", "0"], ["--threads", "-1"], ["--host="],
                ["--max-connections", "0"], ["--max-connections", "x"],
                ["--host", "localhost"], ["--host", "256.1.1.1"], ["extra"]):
        r = run(binary, *bad)
        check(r.returncode == 2 and r.stderr and not r.stdout,
              f"{bad}: status {r.returncode} (not 2), stdout {r.stdout!r}, "
              f"stderr {r.stderr!r}")
    with Server(binary, "--threads", "2") as server:
        r = run(binary, "--port", str(server.port))
        check(r.returncode == 1 and "address_in_use" in r.stderr,
              f"a taken port: status {r.returncode} (not 1), stderr "
              f"{r.stderr!r}")
    # --max-connections 1: a second client is turned away (reset) while
    # the first is open. The reset may come so soon that connect() itself
    # reports it.
    with Server(binary, "--max-connections", "1") as server:
        first = connect(server.port)
        try:
            second = connect(server.port)
        except ConnectionResetError:
            second = None
        if second:
            expect_closed(second, "a client past --max-connections 1")
            second.close()
        first.close()


# --- echo ----------------------------------------------------------------------

def echo_three_clients(port, seed):
    """Three clients on `port` send messages of 0 B to 200 KiB,
    interleaved, and each must get its own back exactly. Returns the
    clients, still open."""
    rng = random.Random(seed)
    sizes = [0, 1, 100, 4096, 65536 + 3, 200 * 1024, 7]
    clients = [connect(port) for _ in range(3)]
    sent = [[rng.randbytes(n) for n in sizes] for _ in clients]
    # Interleaved, so the server has all three in hand at once.
    for k in range(len(sizes)):
        for s, msgs in zip(clients, sent):
            send_msg(s, msgs[k])
    for i, (s, msgs) in enumerate(zip(clients, sent)):
        for k, msg in enumerate(msgs):
            got = recv_msg(s)
            check(got == msg, f"client {i}, message {k}: {len(got)} "
                  f"bytes back, not the {len(msg)} sent")
    return clients


def check_echo_clients(binary):
    with Server(binary) as server:
        for s in echo_three_clients(server.port, 1):
            s.close()


def check_echo_slow_reader(binary):
    # Two clients each write 16 messages of 1 MiB (the engine's largest)
    # and read nothing until they have written all (or their writes stall,
    # as the server stops reading them). The server's echoes pile up: past
    # what the engine queues for one connection (4 MiB), send() refuses
    # them, and the backlog and writable events carry the rest (how often
    # depends on timing; the server's stderr says). Whichever way they go,
    # every byte must come back, in order.
    count, size = 16, 1 << 20
    rng = random.Random(2)
    msgs = [struct.pack(">I", i) + rng.randbytes(size - 4)
            for i in range(count)]
    with Server(binary) as server:
        clients = [connect(server.port, rcvbuf=64 * 1024) for _ in range(2)]
        errors = []

        def write_all(s):
            try:
                for m in msgs:
                    send_msg(s, m)
            except OSError as e:
                errors.append(e)

        writers = [threading.Thread(target=write_all, args=(s,), daemon=True)
                   for s in clients]
        for w in writers:
            w.start()
        # Not a synchronisation: with it or without, every byte must come
        # back. Waiting first only lets the server's queues fill up.
        for w in writers:
            w.join(2.0)
        # Both at once: a client not read would hold the other's writer.
        results = [None] * len(clients)

        def read_all(i):
            try:
                for k, m in enumerate(msgs):
                    got = recv_msg(clients[i])
                    check(got == m, f"client {i}, message {k}: {len(got)} "
                          "bytes, not what was sent")
                results[i] = "ok"
            except (Failure, OSError) as e:
                results[i] = e

        readers = [threading.Thread(target=read_all, args=(i,), daemon=True)
                   for i in range(len(clients))]
        for r in readers:
            r.start()
        for t in readers + writers:
            t.join(WAIT * 3)
        check(results == ["ok"] * len(clients), f"readers: {results}")
        check(not any(w.is_alive() for w in writers) and not errors,
              f"writers: {errors or 'still blocked'}")
        for s in clients:
            s.close()


def check_echo_ipv6(binary):
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as e:
        print(f"skipped: no IPv6 loopback here ({e})")
        sys.exit(SKIP)
    with Server(binary, "--host", "::1") as server:
        check(server.host == "[::1]", f"printed host {server.host!r}")
        s = connect(server.port, host="::1")
        send_msg(s, b"over IPv6")
        check(recv_msg(s) == b"over IPv6", "the echo over IPv6")
        s.close()


# --- chat ----------------------------------------------------------------------

def name_of(s):
    host, port = s.getsockname()[:2]
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode()


def join_chat(port, members, **kw):
    """A new client, once the server has it on its list: it says hello and
    waits for its own line to come back. Those already in hear it too."""
    s = connect(port, **kw)
    send_msg(s, b"hello")
    hello = name_of(s) + b": hello"
    for m in members + [s]:
        got = recv_msg(m)
        check(got == hello, f"expected {hello!r}, got {got[:80]!r}")
    return s


def check_chat_broadcast(binary):
    lines = 20
    with Server(binary) as server:
        clients = []
        for _ in range(3):
            clients.append(join_chat(server.port, clients))
        for k in range(lines):
            for s in clients:
                send_msg(s, b"line %d" % k)
        seen = []
        for i, s in enumerate(clients):
            got = [recv_msg(s) for _ in range(lines * len(clients))]
            for c in clients:
                mine = [g for g in got if g.startswith(name_of(c) + b": ")]
                want = [name_of(c) + b": line %d" % k for k in range(lines)]
                check(mine == want, f"client {i}: {name_of(c)}'s lines "
                      f"arrived as {mine[:3]}..., not in order")
            seen.append(got)
        # One user thread sends each line to all in turn, and each
        # connection keeps its order: every client sees the same order.
        check(seen[0] == seen[1] == seen[2], "clients saw different orders")
        # A client leaves; the others go on.
        clients.pop().close()
        send_msg(clients[0], b"bye")
        for s in clients:
            check(recv_msg(s) == name_of(clients[0]) + b": bye", "after a "
                  "client left")
        for s in clients:
            s.close()


def check_chat_lagging(binary):
    # A floods 600 lines of 32 KiB (19 MiB), reading each back before the
    # next. L does not read meanwhile: the engine's queue for it (4 MiB)
    # plus what the kernel buffers for it (a 64 KiB receive buffer; the
    # server's send buffer grows to 4 MiB at most) hold about 8 MiB, so
    # the server must mark it lagging and drop lines for it.
    count, size = 600, 32 * 1024
    with Server(binary) as server:
        a = join_chat(server.port, [])
        lagger = join_chat(server.port, [a], rcvbuf=64 * 1024)
        prefix = name_of(a) + b": "
        for i in range(count):
            line = b"flood %d " % i
            send_msg(a, line + b"x" * (size - len(line)))
            got = recv_msg(a)
            check(got.startswith(prefix + line), f"A's line {i} back as "
                  f"{got[:40]!r}")
        # L reads now: its lines in order, where a notice stands for those
        # dropped (a gap of exactly that many), until all are accounted.
        accounted = notices = 0
        for _ in range(2 * count):
            if accounted == count:
                break
            got = recv_msg(lagger)
            m = re.fullmatch(rb"server: (\d+) lines dropped", got)
            if m:
                check(int(m.group(1)) > 0, f"notice {got!r}")
                accounted += int(m.group(1))
                notices += 1
                continue
            want = prefix + b"flood %d " % accounted
            check(got.startswith(want), f"expected {want!r}, got "
                  f"{got[:40]!r} (after {notices} notices)")
            accounted += 1
        check(accounted == count, f"{accounted} of {count} lines accounted")
        check(notices > 0, "19 MiB went to a client that did not read, "
              "yet nothing was dropped")
        # Caught up: it receives again.
        send_msg(a, b"after")
        check(recv_msg(a) == prefix + b"after", "A's own line")
        got = recv_msg(lagger)
        check(got == prefix + b"after", f"after catching up: {got[:40]!r}")
        print(f"the lagging client got {notices} notice(s)")
        a.close()
        lagger.close()


# --- http_plaintext --------------------------------------------------------------

DATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|"
                  r"Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT")


def request(path="/plaintext", extra=""):
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
            "\r\n").encode()


class HttpReader:
    """Reads replies off one connection; checks each is the plaintext
    answer and returns its headers (names lower-cased)."""

    def __init__(self, s):
        self.s = s
        self.buf = b""

    def _fill(self):
        data = self.s.recv(65536)
        check(data, "the server closed the connection")
        self.buf += data

    def reply(self):
        for _ in range(10000):
            if b"\r\n\r\n" in self.buf:
                break
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        check(lines[0] == "HTTP/1.1 200 OK", f"status line {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        check(headers.get("server"), f"no Server header: {headers}")
        check(headers.get("content-type") == "text/plain", f"{headers}")
        check(headers.get("content-length") == "13", f"{headers}")
        date = headers.get("date", "")
        check(DATE.fullmatch(date), f"Date {date!r}")
        skew = abs(email.utils.parsedate_to_datetime(date).timestamp() -
                   time.time())
        check(skew < 5, f"Date {date!r} is {skew:.0f} s off")
        for _ in range(100):
            if len(self.buf) >= 13:
                break
            self._fill()
        body, self.buf = self.buf[:13], self.buf[13:]
        check(body == b"Hello, World!", f"body {body!r}")
        return headers


def check_http_keep_alive(binary):
    with Server(binary) as server:
        s = connect(server.port)
        r = HttpReader(s)
        for i in range(5):
            s.sendall(request(f"/{i}"))
            h = r.reply()
            check("connection" not in h, f"request {i}: {h}")
        s.sendall(request(extra="Connection: close\r\n"))
        check(r.reply().get("connection") == "close", "Connection: close")
        expect_closed(s, "after Connection: close")
        s.close()
        # HTTP/1.0 closes unless asked to keep the connection.
        s = connect(server.port)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        HttpReader(s).reply()
        expect_closed(s, "after an HTTP/1.0 request")
        s.close()
        s = connect(server.port)
        r = HttpReader(s)
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            check(r.reply().get("connection") == "keep-alive", "1.0 kept")
        s.close()


def check_http_pipelined(binary):
    with Server(binary) as server:
        s = connect(server.port)
        r = HttpReader(s)
        s.sendall(b"".join(request(f"/{i}", "X-N: %d\r\n" % i)
                           for i in range(10)))
        for _ in range(10):
            r.reply()
        # Enough tiny requests that their replies pass one batch (64 KiB).
        s.sendall(b"GET / HTTP/1.1\r\n\r\n" * 2000)
        for _ in range(2000):
            r.reply()
        s.sendall(request())
        r.reply()
        check(r.buf == b"", f"extra bytes: {r.buf[:80]!r}")
        s.close()


def check_http_split(binary):
    with Server(binary) as server:
        s = connect(server.port)
        r = HttpReader(s)
        whole = request(extra="User-Agent: smoke\r\n")
        for cut in (5, len(whole) - 1, len(whole) - 2, len(whole) - 3):
            s.sendall(whole[:cut])
            # Half a request gets no answer. (A wait that can only catch a
            # wrong answer, never fail a right one.)
            s.settimeout(0.3)
            try:
                early = s.recv(65536)
            except socket.timeout:
                early = None
            s.settimeout(WAIT)
            check(early is None, f"cut at {cut}: answered early: {early!r}")
            s.sendall(whole[cut:])
            r.reply()
        # A whole request and half of one, then the rest and one more.
        s.sendall(whole + whole[:10])
        r.reply()
        s.sendall(whole[10:] + whole)
        r.reply()
        r.reply()
        # One byte a write.
        for i in range(len(whole)):
            s.sendall(whole[i:i + 1])
        r.reply()
        check(r.buf == b"", f"extra bytes: {r.buf[:80]!r}")
        # Left open, half a request pending: the server stops with it
        # (and, under ASan, must free its state as it closes).
        s.sendall(whole[:20])
    s.close()


def check_http_refused(binary):
    big = "X-Pad: " + "a" * (9 * 1024) + "\r\n"
    cases = [
        ("a header block over 8 KiB", request(extra=big)),
        ("an unfinished header block over 8 KiB",
         b"GET / HTTP/1.1\r\n" + big.encode() * 2),
        ("a body", b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
        ("a chunked body",
         b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("a bad request line", b"NONSENSE\r\n\r\n"),
        ("a bad version", b"GET / HTTP/2.0\r\n\r\n"),
        ("a header without a colon", b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
    ]
    with Server(binary) as server:
        for what, data in cases:
            s = connect(server.port)
            s.sendall(data)
            expect_closed(s, what)
            s.close()
        # The requests before a refused one are answered.
        s = connect(server.port)
        s.sendall(request() + request() + b"NONSENSE\r\n\r\n")
        r = HttpReader(s)
        r.reply()
        r.reply()
        check(r.buf == b"", f"extra bytes: {r.buf[:80]!r}")
        expect_closed(s, "after a refused request")
        s.close()
        # Just under the limit, and an empty body, are fine.
        s = connect(server.port)
        pad = "X-Pad: " + "a" * (8 * 1024 - 100) + "\r\n"
        s.sendall(request(extra=pad) + request(extra="Content-Length: 0\r\n"))
        r = HttpReader(s)
        r.reply()
        r.reply()
        s.close()


# --- proxy (relays to an ionet-example-echo started for it) ---------------------

def free_port():
    """A port nothing listens on (it was free a moment ago)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check_proxy_flags(binary, upstream_binary):
    r = run(binary, "--help")
    check(r.returncode == 0 and "--upstream" in r.stdout,
          f"--help: status {r.returncode}, stdout {r.stdout!r}")
    r = run(binary, "--version")
    check(r.returncode == 0 and
          re.fullmatch(r"ionet-example-proxy \d+\.\d+\.\d+\n", r.stdout),
          f"--version: status {r.returncode}, stdout {r.stdout!r}")
    for bad in ([], ["--upstream"], ["--upstream", "127.0.0.1"],
                ["--upstream", "127.0.0.1:0"], ["--upstream", "::1:80"],
                ["--upstream", "127.0.0.1:65536"], ["--upstream=:80"],
                ["--upstream", "127.0.0.1:80", "--bogus"]):
        r = run(binary, *bad)
        check(r.returncode == 2 and r.stderr and not r.stdout,
              f"{bad}: status {r.returncode} (not 2), stdout {r.stdout!r}, "
              f"stderr {r.stderr!r}")


def check_proxy_relay(binary, upstream_binary):
    with Server(upstream_binary) as echo, \
            Server(binary, "--upstream", f"127.0.0.1:{echo.port}",
                   "--threads", "2") as proxy:
        # Two engine threads: a link's two ends may be served by both.
        clients = echo_three_clients(proxy.port, 2)
        # A client that ends its side: the proxy ends the upstream's, and
        # then the client's connection (EOF, nothing more).
        s = clients[0]
        s.shutdown(socket.SHUT_WR)
        expect_closed(s, "a client after its own end")
        for s in clients:
            s.close()


def check_proxy_upstream_down(binary, upstream_binary):
    with Server(binary, "--upstream", f"127.0.0.1:{free_port()}") as proxy:
        for i in range(3):
            # The reset may come so soon that connect() or the send
            # reports it.
            try:
                s = connect(proxy.port)
            except ConnectionResetError:
                continue
            try:
                send_msg(s, b"nobody is there")
            except (ConnectionResetError, BrokenPipeError):
                s.close()
                continue
            expect_closed(s, f"client {i} of an upstream that refuses")
            s.close()


PROXY_CHECKS = {
    "proxy-flags": check_proxy_flags,
    "proxy-relay": check_proxy_relay,
    "proxy-upstream-down": check_proxy_upstream_down,
}

CHECKS = {
    "flags": check_flags,
    "echo-clients": check_echo_clients,
    "echo-slow-reader": check_echo_slow_reader,
    "echo-ipv6": check_echo_ipv6,
    "chat-broadcast": check_chat_broadcast,
    "chat-lagging": check_chat_lagging,
    "http-keep-alive": check_http_keep_alive,
    "http-pipelined": check_http_pipelined,
    "http-split": check_http_split,
    "http-refused": check_http_refused,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", required=True, help="the example program")
    p.add_argument("--upstream-binary",
                   help="proxy checks: the echo example to relay to")
    p.add_argument("check", choices=sorted({**CHECKS, **PROXY_CHECKS}))
    args = p.parse_args()
    if args.check in PROXY_CHECKS and not args.upstream_binary:
        p.error(f"{args.check} needs --upstream-binary")
    started = time.monotonic()
    try:
        if args.check in PROXY_CHECKS:
            PROXY_CHECKS[args.check](args.binary, args.upstream_binary)
        else:
            CHECKS[args.check](args.binary)
    except (Failure, OSError, subprocess.TimeoutExpired) as e:
        traceback.print_exc(file=sys.stdout)
        print(f"FAIL: {args.check}: {e}")
        return 1
    print(f"PASS: {args.check} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
