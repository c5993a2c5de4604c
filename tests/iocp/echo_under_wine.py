#!/usr/bin/env python3
"""ionet-echo.exe under Wine, driven by a native Linux client.

Opens --connections framed connections to the IOCP echo server and holds
them all at once; then every connection sends one message (a pattern of
its own) and checks that exactly those bytes come back. Only the server's
sockets count against Wine's ~19,700 sockets per prefix (shared/WINE.md),
which is why the client is native. Exit 0 when every connection was
accepted and echoed intact, 1 otherwise, 2 on a bad flag.
"""
import argparse
import errno
import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time


def progress(msg):
    print(f"echo_under_wine: {msg}", file=sys.stderr, flush=True)


def payload(i):
    n = 16 + (i * 37) % 200
    return bytes(((i * 131 + j * 7) ^ (j >> 3)) & 0xFF for j in range(n))


def start_server(args, out):
    env = dict(os.environ)
    # The prefix ci/wine-run uses: its default is build/wine-prefix in the
    # checkout it belongs to.
    root = os.path.dirname(os.path.dirname(os.path.abspath(args.wine_run)))
    env.setdefault("IONET_WINEPREFIX", os.path.join(root, "build", "wine-prefix"))
    # Make the prefix and its persistent server first (ci/wine-run does).
    subprocess.run([args.wine_run, "cmd", "/c", "exit", "0"], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env["WINEPREFIX"] = env["IONET_WINEPREFIX"]
    env["WINEDEBUG"] = "-all"
    # Output to a file, not a pipe: Wine's services would hold a pipe open.
    return subprocess.Popen(
        ["/usr/lib/wine/wine64", args.server, "--host", "127.0.0.1", "--port", "0",
         "--max-connections", str(args.max_connections)],
        stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_listening(proc, path, deadline):
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if line.startswith("listening on "):
                    return int(line.rsplit(":", 1)[1])
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def connect_all(port, n, deadline, in_flight=200):
    """Non-blocking connects, at most in_flight at a time."""
    sel = selectors.DefaultSelector()
    done, failed, next_i, pending = [], 0, 0, 0
    last = time.monotonic()
    while (next_i < n or pending) and time.monotonic() < deadline:
        while next_i < n and pending < in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                failed += 1
                s.close()
            else:
                sel.register(s, selectors.EVENT_WRITE, next_i)
                pending += 1
            next_i += 1
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            sel.unregister(s)
            pending -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done.append((key.data, s))
            else:
                failed += 1
                s.close()
        if time.monotonic() - last > 2:
            progress(f"connected {len(done)} of {n}")
            last = time.monotonic()
    failed += pending + (n - next_i)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return done, failed


def echo_all(conns, deadline):
    """Each connection sends one frame and must read back exactly it."""
    sel = selectors.DefaultSelector()
    want, got, out = {}, {}, {}
    for i, s in conns:
        body = payload(i)
        want[s] = struct.pack(">I", len(body)) + body
        out[s] = want[s]
        got[s] = b""
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    ok = corrupt = 0
    last = time.monotonic()
    while sel.get_map() and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            if ev & selectors.EVENT_WRITE and out[s]:
                n = s.send(out[s])
                out[s] = out[s][n:]
                if not out[s]:
                    sel.modify(s, selectors.EVENT_READ)
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    corrupt += 1
                    sel.unregister(s)
                    continue
                got[s] += data
                if len(got[s]) >= len(want[s]):
                    if got[s] == want[s]:
                        ok += 1
                    else:
                        corrupt += 1
                    sel.unregister(s)
        if time.monotonic() - last > 2:
            progress(f"echoed {ok} of {len(conns)}")
            last = time.monotonic()
    return ok, corrupt, len(sel.get_map())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="path to ionet-echo.exe")
    p.add_argument("--wine-run", required=True, help="path to ci/wine-run")
    p.add_argument("--connections", type=int, default=15000)
    p.add_argument("--max-connections", type=int, default=16000)
    p.add_argument("--timeout", type=float, default=240, help="seconds for the whole run")
    try:
        args = p.parse_args()
    except SystemExit as e:
        sys.exit(0 if e.code == 0 else 2)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    deadline = time.monotonic() + args.timeout
    log = tempfile.NamedTemporaryFile(prefix="ionet-echo-", suffix=".out", delete=False)
    proc = start_server(args, log)
    result = {"connections_wanted": args.connections}
    conns = []
    try:
        port = wait_listening(proc, log.name, time.monotonic() + 60)
        if port is None:
            progress("ionet-echo.exe did not start")
            return 1
        progress(f"ionet-echo.exe listening on port {port}")
        t0 = time.monotonic()
        conns, failed = connect_all(port, args.connections, deadline)
        result.update(connected=len(conns), connect_failures=failed,
                      connect_seconds=round(time.monotonic() - t0, 2))
        progress(f"{len(conns)} connections held at once, {failed} failed")
        t1 = time.monotonic()
        ok, corrupt, unfinished = echo_all(conns, deadline)
        result.update(echoed=ok, corrupted=corrupt, unfinished=unfinished,
                      echo_seconds=round(time.monotonic() - t1, 2))
    finally:
        proc.send_signal(signal.SIGINT)  # Wine turns it into CTRL_C_EVENT
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        for _, s in conns:
            s.close()
    with open(log.name, "rb") as f:
        lines = f.read().decode(errors="replace").splitlines()
    os.unlink(log.name)
    stats = None
    for line in lines:
        if line.startswith("{"):
            stats = json.loads(line)
    result["server_exit"] = rc
    if stats:
        eng = stats["engine"]
        result.update({k: eng[k] for k in ("accepted", "rejected", "accept_pool_growths",
                                           "sockets_created", "stale_completions",
                                           "operations_in_flight")})
    print(json.dumps(result))
    good = (rc == 0 and stats is not None and
            result["connected"] == args.connections and result["connect_failures"] == 0 and
            result["echoed"] == args.connections and result["corrupted"] == 0 and
            result["accepted"] == args.connections and result["operations_in_flight"] == 0)
    if not good:
        progress("FAILED: " + "\n".join(lines[-5:]))
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
