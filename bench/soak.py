#!/usr/bin/env python3
"""ci/soak: a long run of mixed churn and traffic against ionet-echo.

One ionet-echo (printing its stats every second, --stats-interval) serves,
for --minutes:
  - a steady load: one ionet-load in echo mode, open loop (--connections at
    --rate messages/s in all, 300-byte messages), for the whole run;
  - churn: short ionet-load runs one after another, alternating a connect
    burst of 1,000 connections and a 5-second echo run of 200 connections
    with 4,096-byte messages (open loop, 4,000 msg/s); the first run, in
    warm-up, is a 2-second closed-loop echo that touches every page of the
    pools (see FILL_* below).
ionet-load checks every echoed byte against its pattern; every run must end
with no corrupted byte, no error, no connect failure, no stalled connection.

Once a minute one line: the server's RSS (VmRSS) and how far it is from the
baseline taken at the end of warm-up, the messages echoed so far, the churn
runs and their failures, the connections open, and whether the counters
balance. After warm-up, RSS must stay within 5% of the baseline.

Counters. stats() derives connections_open as accepted - closed, so
`accepted == closed + connections_open` holds by construction; what can be
checked is that the counters are plausible against what the loads hold. The
counters are separate relaxed atomics read one after another while traffic
flows, so while the loads run the checks are loose (closed <= accepted, open
within the connections the loads can hold, bytes queued but neither sent nor
dropped bounded by the slice pool). Once the loads have stopped and the
server has been quiet for 2 s, the exact identities are checked: nothing
open; accepted equals the connections the loads made; bytes_queued ==
bytes_sent + bytes_dropped (every queued chain is counted once, sent or
dropped, by engine_core::write_done or close_slot); no slice in use; one
send() per message received (inline echo); no operation left in flight
beyond the accepts and wake-ups the server had at start; as many open files
as at start. Then the server is stopped with SIGINT and must exit 0.

Exit status: 0 on PASS, 1 on FAIL, 2 on bad flags or missing binaries.
"""

import argparse
import datetime
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PRESETS, ROOT, Server, binary, rss_kib  # noqa: E402

STATS_INTERVAL = 1.0  # seconds between the server's stats lines
STEADY_SIZE = 300  # bytes per steady-load message
STEADY_INFLIGHT = 4  # open loop: most outstanding per connection
BURST_CONNECTIONS = 1000  # churn: connect burst
ECHO_CHURN_CONNECTIONS = 200  # churn: short echo runs
ECHO_CHURN_SIZE = 4096
ECHO_CHURN_SECONDS = 5.0
# Open loop, so the churn cannot take the whole machine (2 cores, shared):
# 4,000 x 4 KiB/s = 16 MiB/s each way.
ECHO_CHURN_RATE = 4000.0
# The first run, at the start of warm-up: a short closed-loop echo with
# deep pipelines, so reads come in whole 16 KiB chunks. The pools are
# reserved at start but their pages are touched only as used; the io_uring
# backend's receive buffers (1,024 x 16 KiB per ring) are used in turn, and
# a read touches only the pages it fills, so under the mixed load alone
# their RSS creeps up (by ~4 MiB, a quarter of the server's RSS) for many
# minutes before it levels off. This run touches them all during warm-up,
# as a long-running server will have, so the baseline is the plateau and
# what grows after it is a leak. It also sets the slice pool's high-water
# mark above what the rest of the load reaches. Only in warm-up: repeated
# later, its peak could move that mark a little and look like growth.
FILL_CONNECTIONS = 20
FILL_SIZE = 4096
FILL_INFLIGHT = 32
FILL_SECONDS = 2.0
FILL_ESTIMATE = FILL_SECONDS + 3.0
CHURN_PAUSE = 0.5  # seconds between churn runs
# A run is not started unless it can end before the soak does; these are
# generous estimates of a run's wall time (connects, window, close).
BURST_ESTIMATE = 4.0
ECHO_CHURN_ESTIMATE = ECHO_CHURN_SECONDS + 3.0
# An echo still missing after this long at the end of a run is a stall (a
# failure). Longer than ionet-load's 2 s default: the machine is shared, and a
# lost echo stays missing whatever the limit.
STALL_TIMEOUT = 5.0
RSS_TOLERANCE = 0.05
QUIET_SECONDS = 2.0  # counters unchanged this long: quiescent
QUIET_TIMEOUT = 30.0  # give up waiting for quiet after this long
STATS_STALE = 5.0  # a stats line older than this: the server is stuck
SLICE_BYTES = 512  # passed to the server, so the pool's size in bytes is known


def positive_minutes(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number")
    if not v > 0 or v > 24 * 60:
        raise argparse.ArgumentTypeError("must be > 0 and at most 1440")
    return v


def parse_args(argv):
    # No abbreviated flags: ci/soak reads --backend itself to pick the build.
    p = argparse.ArgumentParser(
        prog="ci/soak", allow_abbrev=False,
        description="Soak test: mixed connection churn and echo traffic against ionet-echo, "
                    "checking every minute that RSS stays within 5% of its post-warm-up "
                    "baseline, that no byte is corrupted and that the counters balance; "
                    "prints a line a minute and a verdict (exit 0 PASS, 1 FAIL).")
    p.add_argument("--minutes", type=positive_minutes, default=30.0,
                   help="length of the soak in minutes (default 30; fractions allowed)")
    p.add_argument("--backend", choices=sorted(PRESETS), default="libuv",
                   help="which ionet-echo: libuv (build/linux-release) or uring "
                        "(build/linux-uring-release); default libuv")
    p.add_argument("--warmup-minutes", type=float, default=None,
                   help="minutes before RSS is checked; the baseline is taken at its end "
                        "(default 1, or a quarter of --minutes when that is less)")
    p.add_argument("--connections", type=int, default=200,
                   help="connections of the steady load (default 200)")
    p.add_argument("--rate", type=float, default=2000.0,
                   help="messages per second of the steady load, over all its connections "
                        "(default 2000)")
    p.add_argument("--out", default=None,
                   help="JSON report (default bench/results/soak-<UTC stamp>-<backend>.json)")
    args = p.parse_args(argv)
    if args.warmup_minutes is None:
        args.warmup_minutes = min(1.0, args.minutes / 4)
    if not 0 < args.warmup_minutes < args.minutes:
        p.error("--warmup-minutes must be > 0 and less than --minutes")
    if not 1 <= args.connections <= 10000:
        p.error("--connections must be between 1 and 10000")
    if not 0.01 <= args.rate <= 1e6:
        p.error("--rate must be between 0.01 and 1000000 messages per second")
    if args.out is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        args.out = os.path.join(ROOT, "bench", "results", f"soak-{stamp}-{args.backend}.json")
    return args


# --- /proc --------------------------------------------------------------------

def open_files(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def mib(kib):
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


# --- the server ---------------------------------------------------------------

def prime(port):
    """One connection, one echoed message, closed: what a server creates on
    its first connection and keeps (libuv opens its reserve descriptor,
    /dev/null for the EMFILE trick, in the first uv_tcp_init) is then part
    of the baseline. True when the echo came back intact."""
    payload = b"ionet soak priming message"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">I", len(payload)) + payload)
        want = 4 + len(payload)
        got = b""
        while len(got) < want:
            chunk = s.recv(want - len(got))
            if not chunk:
                break
            got += chunk
    return got == struct.pack(">I", len(payload)) + payload


# --- the loads ----------------------------------------------------------------

def load_failure(rc, result):
    """Why a finished ionet-load run failed, or None."""
    if result is None:
        return f"no JSON result (exit {rc})"
    bad = [f"{k} {result.get(k)}" for k in ("corrupted_bytes", "errors", "connect_failures",
                                             "stalled_connections") if result.get(k)]
    if rc != 0:
        bad.insert(0, f"exit {rc}")
    if bad and result.get("error_samples"):
        bad.append("e.g. " + "; ".join(result["error_samples"][:2]))
    return ", ".join(bad) if bad else None


class Load:
    """One ionet-load process; stdout and stderr go to files (never a full pipe)."""

    def __init__(self, load_bin, port, extra, budget):
        self.out = tempfile.TemporaryFile(prefix="soak-load-", suffix=".out")
        self.err = tempfile.TemporaryFile(prefix="soak-load-", suffix=".err")
        self.cmd = [load_bin, "--host", "127.0.0.1", "--port", str(port),
                    "--framing", "length_prefix", "--stall-timeout", str(STALL_TIMEOUT)] + extra
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.proc = subprocess.Popen(self.cmd, stdout=self.out, stderr=self.err)

    def wait(self):
        """Waits until it ends; past its budget it is killed (and fails)."""
        try:
            self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()

    PROGRESS = re.compile(r"ionet-load: measure .* (\d+) open, (\d+) problems")

    def progress(self):
        """From its latest progress line (stderr, each second of the
        measured window): (connections open, problems so far), where
        problems counts corrupted bytes, errors, connect failures and
        stalls; None before the first line."""
        try:
            size = os.fstat(self.err.fileno()).st_size
            with open(f"/proc/self/fd/{self.err.fileno()}", "rb") as f:
                f.seek(max(0, size - 4096))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            m = self.PROGRESS.search(line)
            if m:
                return int(m.group(1)), int(m.group(2))
        return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def result(self):
        """(exit status, parsed JSON or None, stderr tail)."""
        self.out.seek(0)
        text = self.out.read().decode(errors="replace").strip()
        self.err.seek(0)
        err = self.err.read().decode(errors="replace")
        try:
            result = json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            result = None
        return self.proc.returncode, result, err[-600:]

    def close(self):
        self.kill()
        self.out.close()
        self.err.close()


class Churn:
    """Short load runs one after another until told to stop or out of time."""

    def __init__(self, load_bin, port, end_at, children):
        self.load_bin = load_bin
        self.port = port
        self.end_at = end_at  # monotonic: no run may be running after this
        self.children = children
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.runs = []  # compact records
        self.failures = []  # (record, why)
        self.max_connections = max(BURST_CONNECTIONS, ECHO_CHURN_CONNECTIONS,
                                   FILL_CONNECTIONS)
        self.in_flight = 0  # connections of the run going on
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def counts(self):
        with self.lock:
            return len(self.runs), len(self.failures), self.in_flight

    def _loop(self):
        fill = ("fill", FILL_CONNECTIONS, FILL_ESTIMATE,
                ["--mode", "echo", "--connections", str(FILL_CONNECTIONS),
                 "--size", str(FILL_SIZE), "--inflight", str(FILL_INFLIGHT),
                 "--duration", str(FILL_SECONDS), "--warmup", "0"])
        kinds = [
            ("connect-burst", BURST_CONNECTIONS, BURST_ESTIMATE,
             ["--mode", "connect-burst", "--connections", str(BURST_CONNECTIONS)]),
            ("echo", ECHO_CHURN_CONNECTIONS, ECHO_CHURN_ESTIMATE,
             ["--mode", "echo", "--connections", str(ECHO_CHURN_CONNECTIONS),
              "--size", str(ECHO_CHURN_SIZE), "--rate", str(ECHO_CHURN_RATE),
              "--inflight", "8", "--duration", str(ECHO_CHURN_SECONDS), "--warmup", "0"]),
        ]
        i = -1
        while not self.stop.is_set():
            kind, conns, estimate, extra = fill if i < 0 else kinds[i % len(kinds)]
            i += 1
            if time.monotonic() + estimate > self.end_at:
                break
            # Its own budget: a hung run is killed and counted as a failure.
            load = Load(self.load_bin, self.port, extra, budget=estimate + 30)
            with self.lock:
                self.in_flight = conns
            self.children.append(load.proc)
            try:
                load.wait()
                rc, result, err = load.result()
            finally:
                load.close()
                self.children.remove(load.proc)
            rec = {"kind": kind, "started_s": round(load.started - self.t0, 2),
                   "seconds": round(time.monotonic() - load.started, 2), "exit": rc}
            if result is not None:
                for k in ("connections", "connected", "corrupted_bytes", "errors",
                          "connect_failures", "stalled_connections", "messages"):
                    if k in result:
                        rec[k] = result[k]
            why = load_failure(rc, result)
            with self.lock:
                self.in_flight = 0
                self.runs.append(rec)
                if why:
                    rec["stderr_tail"] = err
                    self.failures.append((rec, why))
            self.stop.wait(CHURN_PAUSE)

    def start(self, t0):
        self.t0 = t0
        self.thread.start()


# --- checks -------------------------------------------------------------------

def loose_problems(st, steady_conns, churn_max, steady_live):
    """Invariants that hold at any moment, however the counters were read."""
    e = st["engine"]
    problems = []
    if e["closed"] > e["accepted"]:
        problems.append(f"closed {e['closed']} > accepted {e['accepted']}")
    elif e["connections_open"] != e["accepted"] - e["closed"]:
        problems.append(f"connections_open {e['connections_open']} != accepted - closed "
                        f"{e['accepted'] - e['closed']}")
    # Every connection the loads can hold at once, twice the churn's for a
    # run whose connections are still being closed as the next one connects.
    high = steady_conns + 2 * churn_max
    if e["connections_open"] > high:
        problems.append(f"connections_open {e['connections_open']} > {high}, more than the "
                        "loads can hold")
    if steady_live and e["connections_open"] < steady_conns:
        problems.append(f"connections_open {e['connections_open']} < the steady load's "
                        f"{steady_conns}")
    if e["rejected"]:
        problems.append(f"rejected {e['rejected']}")
    if e["pool_slices_in_use"] > e["pool_slices_total"]:
        problems.append(f"pool_slices_in_use {e['pool_slices_in_use']} > total "
                        f"{e['pool_slices_total']}")
    # Queued bytes not yet sent nor dropped sit in slices, so at most the
    # pool's bytes; the reads are not simultaneous, so either sign.
    pending = e["bytes_queued"] - e["bytes_sent"] - e["bytes_dropped"]
    pool_bytes = e["pool_slices_total"] * SLICE_BYTES
    if abs(pending) > pool_bytes:
        problems.append(f"bytes_queued - bytes_sent - bytes_dropped = {pending}, beyond the "
                        f"pool's {pool_bytes} bytes")
    if e["frames_too_large"]:
        problems.append(f"frames_too_large {e['frames_too_large']}")
    return problems


def exact_checks(st, start_st, start_files, files, client_connections, client_messages):
    """The identities at quiescence: [(name, ok, detail)]."""
    e, s0 = st["engine"], start_st["engine"]
    echo = st.get("echo", {})
    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    check("nothing open", e["connections_open"] == 0 and e["accepted"] == e["closed"],
          f"accepted {e['accepted']}, closed {e['closed']}, open {e['connections_open']}")
    if client_connections is None:
        check("accepted == connections the loads made", True,
              "not checked: a load run gave no count (its failure is reported)")
    else:
        check("accepted == connections the loads made",
              e["accepted"] == client_connections and e["rejected"] == 0,
              f"accepted {e['accepted']}, the loads connected {client_connections}, "
              f"rejected {e['rejected']}")
    pending = e["bytes_queued"] - e["bytes_sent"] - e["bytes_dropped"]
    check("bytes_queued == bytes_sent + bytes_dropped", pending == 0,
          f"queued {e['bytes_queued']}, sent {e['bytes_sent']}, dropped {e['bytes_dropped']}"
          f" (difference {pending})")
    check("no slice in use", e["pool_slices_in_use"] == 0,
          f"pool_slices_in_use {e['pool_slices_in_use']} of {e['pool_slices_total']}")
    check("no event pending", e["events_pending"] == 0, f"events_pending {e['events_pending']}")
    # Inline echo, length_prefix: each message received is passed to exactly
    # one send(); a refused one is counted by the echo server instead.
    refused = echo.get("send_errors", 0) + echo.get("slow_consumer_closes", 0)
    check("messages_received == messages_sent + refused sends",
          e["messages_received"] == e["messages_sent"] + refused,
          f"received {e['messages_received']}, sent {e['messages_sent']}, refused {refused}")
    check("the loads' echoes <= messages_sent", client_messages <= e["messages_sent"],
          f"the loads counted {client_messages} echoes, the server sent {e['messages_sent']}")
    idle_ops0 = s0["operations_in_flight"] - s0["accepts_pending"]
    idle_ops = e["operations_in_flight"] - e["accepts_pending"]
    check("operations in flight as at start", idle_ops == idle_ops0,
          f"operations_in_flight {e['operations_in_flight']} - accepts_pending "
          f"{e['accepts_pending']} = {idle_ops}; at start {idle_ops0}")
    check("open files as at start", files == start_files,
          f"{files} open files; at start {start_files}")
    return checks


# --- the soak -----------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.echo_bin = binary(PRESETS[args.backend], "bench/ionet-echo")
        self.load_bin = binary(PRESETS[args.backend], "bench/ionet-load")
        self.children = []  # processes to kill if we leave early
        self.failures = []  # reasons for FAIL
        self.samples = []
        self.report = {"tool": "ci/soak", "backend": args.backend,
                       "date": datetime.datetime.now(datetime.timezone.utc)
                       .strftime("%Y-%m-%d %H:%M:%S UTC"),
                       "config": {"minutes": args.minutes, "warmup_minutes": args.warmup_minutes,
                                  "steady": {"connections": args.connections, "rate": args.rate,
                                             "size": STEADY_SIZE, "inflight": STEADY_INFLIGHT},
                                  "churn": {"burst_connections": BURST_CONNECTIONS,
                                            "echo_connections": ECHO_CHURN_CONNECTIONS,
                                            "echo_size": ECHO_CHURN_SIZE,
                                            "echo_seconds": ECHO_CHURN_SECONDS,
                                            "echo_rate": ECHO_CHURN_RATE,
                                            "fill": {"connections": FILL_CONNECTIONS,
                                                     "size": FILL_SIZE,
                                                     "inflight": FILL_INFLIGHT,
                                                     "seconds": FILL_SECONDS}},
                                  "rss_tolerance": RSS_TOLERANCE,
                                  "stall_timeout_s": STALL_TIMEOUT},
                       "binaries": {"ionet-echo": self.echo_bin, "ionet-load": self.load_bin}}

    def say(self, msg):
        print(f"soak: {msg}", flush=True)

    def fail(self, reason):
        if reason not in self.failures:
            self.failures.append(reason)

    def run(self):
        a = self.args
        total_s = a.minutes * 60
        warm_s = a.warmup_minutes * 60
        max_conns = a.connections + 2 * BURST_CONNECTIONS + 1024
        self.say(f"{a.backend} ({self.echo_bin}), {a.minutes:g} min, warm-up "
                 f"{a.warmup_minutes:g} min; steady load {a.connections} connections at "
                 f"{a.rate:g} msg/s of {STEADY_SIZE} B; churn: connect bursts of "
                 f"{BURST_CONNECTIONS} and {ECHO_CHURN_SECONDS:g}-s echo runs of "
                 f"{ECHO_CHURN_CONNECTIONS} connections x {ECHO_CHURN_SIZE} B, after a "
                 f"{FILL_SECONDS:g}-s closed-loop fill run that touches the pools")
        self.say("counters are checked loosely while traffic runs (closed <= accepted, "
                 "open within what the loads hold, bytes in flight within the pool) and "
                 "exactly once the loads have stopped")
        # ionet-echo with --stats-interval: its stats lines are read as they come.
        srv = Server(self.echo_bin, ["--stats-interval", str(STATS_INTERVAL),
                                     "--max-connections", str(max_conns),
                                     "--slice-bytes", str(SLICE_BYTES)])
        self.children.append(srv.proc)
        self.server = srv
        if not srv.wait_listening(timeout=20):
            self.fail(f"ionet-echo did not start: {srv.stderr_tail()}")
            return
        try:
            primed = prime(srv.port)
        except OSError as e:
            primed = f"{e}"
        if primed is not True:
            self.fail(f"the priming connection's echo did not come back intact ({primed})")
            return
        # The baseline: once the priming connection is closed.
        start_st = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            start_st = srv.fresh_stats(timeout=5 + STATS_INTERVAL)
            if start_st is None or (start_st["engine"]["closed"] == 1 and
                                    start_st["engine"]["pool_slices_in_use"] == 0):
                break
        if start_st is None:
            self.fail("ionet-echo printed no stats line (--stats-interval)")
            return
        if start_st["engine"]["closed"] != 1:
            self.fail("the priming connection was not closed within 10 s")
            return
        time.sleep(0.2)  # the descriptor closes a moment after the count
        pid = srv.proc.pid
        start_files = open_files(pid)
        start_rss = rss_kib(pid)
        self.report["server_start"] = {"rss_kib": start_rss, "open_files": start_files,
                                       "stats": start_st}

        t0 = time.monotonic()
        end_at = t0 + total_s
        # The steady load ends a second before the soak does.
        steady_duration = max(1.0, total_s - 1.0)
        steady = Load(self.load_bin, srv.port,
                      ["--mode", "echo", "--connections", str(a.connections),
                       "--size", str(STEADY_SIZE), "--rate", str(a.rate),
                       "--inflight", str(STEADY_INFLIGHT), "--duration", f"{steady_duration:.3f}",
                       "--warmup", "0", "--server-pid", str(pid)],
                      budget=steady_duration + 60)
        self.children.append(steady.proc)
        churn = Churn(self.load_bin, srv.port, end_at - 1.0, self.children)
        self.churn = churn
        churn.start(t0)

        # Sample times: every whole minute, and the end if it is not one.
        marks = [60.0 * m for m in range(1, int(total_s // 60) + 1)]
        if not marks or marks[-1] < total_s - 0.5:
            marks.append(total_s)
        rss_seen = []  # (t, kib) up to the end of warm-up
        baseline = None
        rss_max_after = None  # at the minute samples (checked)
        rss_peak = None  # every second after warm-up (for the report)
        steady_ended = None
        next_rss = 0.0
        for i, mark in enumerate(marks):
            while True:
                now = time.monotonic() - t0
                if now >= next_rss:
                    kib = rss_kib(pid)
                    if kib is not None and baseline is None:
                        rss_seen.append((now, kib))
                    elif kib is not None:
                        rss_peak = max(rss_peak or 0, kib)  # reported, not checked
                    next_rss = now + 1.0
                if baseline is None and now >= warm_s:
                    # The baseline is the largest RSS of the last half of
                    # warm-up, not the one sample at its end. RSS here climbs
                    # to a plateau (the slice pool and the receive buffers
                    # are reserved at start but touched as used; the message
                    # pool keeps what it allocated) and then only wobbles
                    # (malloc trimming, transient buffers). A single sample
                    # could catch a dip and turn the next wobble into a false
                    # alarm; the max of the last half is the plateau, and if
                    # RSS were still climbing it is the latest value anyway.
                    tail = [k for t, k in rss_seen if t >= warm_s / 2] or \
                           [k for _, k in rss_seen[-1:]]
                    baseline = max(tail) if tail else None
                    self.say(f"warm-up over at {now:.0f} s: RSS baseline {mib(baseline)} "
                             f"(max of the last {warm_s / 2:.0f} s of warm-up)")
                if steady_ended is None and steady.proc.poll() is not None:
                    steady_ended = now
                    if now < total_s - 5:
                        self.fail(f"the steady load ended early, at {now:.0f} s "
                                  f"(exit {steady.proc.returncode})")
                if srv.proc.poll() is not None:
                    self.fail(f"ionet-echo exited during the soak (status "
                              f"{srv.proc.returncode}): {srv.stderr_tail()}")
                    break
                if now >= mark:
                    break
                time.sleep(max(0.0, min(1.0, mark - now, next_rss - now)))
            if srv.proc.poll() is not None:
                break
            now = time.monotonic() - t0
            kib = rss_kib(pid)
            if baseline is not None and kib is not None:
                rss_max_after = max(rss_max_after or 0, kib)
            steady_live = steady_ended is None and 5 < now < steady_duration - 2
            self.sample(i + 1, len(marks), now, kib, baseline, srv, churn, a.connections,
                        steady_live, steady)

        # The end: no new churn run; the steady load ends by itself.
        churn.stop.set()
        churn.thread.join(timeout=ECHO_CHURN_ESTIMATE + 40)
        if churn.thread.is_alive():
            self.fail("a churn run did not end")
        steady.wait()
        rc, result, err = steady.result()
        steady.close()
        self.children.remove(steady.proc)
        self.report["steady_load"] = result
        why = load_failure(rc, result)
        if why:
            self.fail(f"steady load: {why}")
            self.report["steady_load_stderr_tail"] = err
        runs, failed, _ = churn.counts()
        with churn.lock:
            self.report["churn"] = {"runs": runs, "failed": failed, "records": list(churn.runs)}
            for rec, why in churn.failures[:5]:
                self.fail(f"churn {rec['kind']} run at {rec['started_s']:.0f} s: {why}")
            churn_results = list(churn.runs)
        if runs == 0:
            self.fail("no churn run took place")

        # Quiet: nothing open, counters unchanged for QUIET_SECONDS.
        final, files = self.wait_quiet(srv, start_files)
        if final is None:
            self.fail("no stats line after the loads stopped")
        else:
            client_conns = None
            if result is not None and all("connected" in r for r in churn_results) and \
                    all(r.get("connect_failures", 0) == 0 for r in churn_results) and \
                    result.get("connect_failures", 0) == 0:
                # + 1: the priming connection.
                client_conns = 1 + result["connected"] + sum(r["connected"] for r in churn_results)
            client_msgs = 1 + (result or {}).get("messages", 0) + \
                sum(r.get("messages", 0) for r in churn_results)
            checks = exact_checks(final, start_st, start_files, files, client_conns, client_msgs)
            self.report["final"] = {"stats": final, "open_files": files, "checks": checks,
                                    "rss_kib": rss_kib(pid)}
            bad = [c for c in checks if not c["ok"]]
            self.say("at rest: " + ("counters balance exactly" if not bad else
                                    "counters do not balance"))
            for c in checks:
                self.say(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
            for c in bad:
                self.fail(f"at rest: {c['check']}: {c['detail']}")

        clean = srv.stop(timeout=30)  # killed: no status, no stats
        rc, exit_st = (srv.proc.returncode, srv.final) if clean else (None, None)
        self.children.remove(srv.proc)
        self.report["server_exit"] = {"status": rc, "stats": exit_st,
                                      "stderr_tail": srv.stderr_tail(),
                                      "other_stdout": srv.said[:20]}
        if rc != 0:
            self.fail(f"ionet-echo's exit status is {rc} (0 expected after SIGINT)")
        elif exit_st is None:
            self.fail("ionet-echo printed no stats at exit")
        elif final is not None:
            moved = [k for k in ("accepted", "closed", "bytes_queued", "bytes_sent",
                                 "bytes_dropped", "messages_received", "messages_sent")
                     if exit_st["engine"][k] != final["engine"][k]]
            if moved:
                self.fail("the exit stats differ from the stats at rest in " + ", ".join(moved))
        self.report["rss"] = {"start_kib": start_rss, "baseline_kib": baseline,
                              "max_after_warmup_kib": rss_max_after,
                              "peak_each_second_after_warmup_kib": rss_peak,
                              "warmup_samples": rss_seen}

    def sample(self, i, n, now, kib, baseline, srv, churn, steady_conns, steady_live, steady):
        age, st = srv.stats()
        runs, failed, _ = churn.counts()
        progress = steady.progress()
        rec = {"minute": round(now / 60, 2), "t_s": round(now, 1), "rss_kib": kib,
               "open_files": open_files(srv.proc.pid), "churn_runs": runs,
               "churn_failures": failed, "phase": "warm-up" if baseline is None else "checked"}
        problems = []
        if st is None or age > STATS_STALE:
            problems.append(f"no stats line for {age if age is not None else now:.0f} s")
        if baseline is not None and kib is not None:
            pct = (kib - baseline) * 100.0 / baseline
            rec["rss_vs_baseline_pct"] = round(pct, 2)
            if abs(pct) > RSS_TOLERANCE * 100:
                problems.append(f"RSS {mib(kib)} is {pct:+.1f}% of the baseline "
                                f"{mib(baseline)}")
            rss_text = f"{mib(kib)} {pct:+.1f}% vs baseline"
        else:
            rss_text = f"{mib(kib)} (warm-up)"
        # The steady load checks every echo as it comes; its progress line
        # says whether anything went wrong so far.
        if progress is None:
            steady_text = "steady ?"
            if steady_live:
                problems.append("no progress line from the steady load")
        else:
            rec["steady_open"], rec["steady_problems"] = progress
            steady_text = f"steady {progress[0]} open, {progress[1]} problems"
            if progress[1]:
                problems.append(f"the steady load reports {progress[1]} problems (corrupted "
                                "bytes, errors or stalls)")
            if steady_live and progress[0] != steady_conns:
                problems.append(f"the steady load holds {progress[0]} of its "
                                f"{steady_conns} connections")
        counters = "?"
        if st is not None:
            e = st["engine"]
            rec.update({"stats_age_s": round(age, 2), "engine": e, "echo": st.get("echo")})
            loose = loose_problems(st, steady_conns, churn.max_connections, steady_live)
            counters = "counters balance (loose)" if not loose else \
                "counters DO NOT balance: " + "; ".join(loose)
            problems += loose
            echoed, open_ = f"{e['messages_sent']:,}", e["connections_open"]
        else:
            echoed, open_ = "?", "?"
        rec["problems"] = problems
        self.samples.append(rec)
        # Counter problems in warm-up count too; RSS is not checked then.
        # Failed churn runs are listed, with their errors, at the end.
        for p in problems:
            self.fail(f"minute {now / 60:.1f}: {p}")
        if failed:
            problems.append(f"{failed} churn run(s) failed")
        self.say(f"minute {now / 60:4.1f} ({i}/{n})  rss {rss_text}  echoed {echoed} msgs  "
                 f"churn {runs} runs, {failed} failed  {steady_text}  open {open_}  files "
                 f"{rec['open_files']}  {counters}"
                 + ("" if not problems else "  <-- " + "; ".join(problems)))

    def wait_quiet(self, srv, start_files):
        """Waits until nothing is open and the counters stood still for
        QUIET_SECONDS; returns (stats line taken then, open files)."""
        keys = ("accepted", "closed", "bytes_received", "bytes_sent", "bytes_queued",
                "bytes_dropped", "pool_slices_in_use", "operations_in_flight")
        deadline = time.monotonic() + QUIET_TIMEOUT
        still_since, last = None, None
        while time.monotonic() < deadline:
            st = srv.fresh_stats(timeout=STATS_INTERVAL + 5)
            if st is None:
                return None, open_files(srv.proc.pid)
            e = st["engine"]
            sig = tuple(e[k] for k in keys)
            if e["connections_open"] == 0 and sig == last:
                if still_since is None:
                    still_since = time.monotonic()
                if time.monotonic() - still_since >= QUIET_SECONDS - STATS_INTERVAL / 2:
                    files = open_files(srv.proc.pid)
                    if files == start_files or time.monotonic() > deadline - 5:
                        return st, files
            else:
                still_since = None
            last = sig
        self.say(f"not quiet after {QUIET_TIMEOUT:.0f} s; checking what there is")
        return srv.fresh_stats(timeout=STATS_INTERVAL + 5), open_files(srv.proc.pid)

    def kill_children(self):
        churn = getattr(self, "churn", None)
        if churn is not None:
            churn.stop.set()  # no new run; the one going on is killed below
        for p in list(self.children):
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if churn is not None and churn.thread.is_alive():
            churn.thread.join(timeout=10)
            for p in list(self.children):  # started as we were killing
                if p.poll() is None:
                    p.kill()
        self.children.clear()

    def verdict(self):
        a = self.args
        self.report["samples"] = self.samples
        self.report["verdict"] = "PASS" if not self.failures else "FAIL"
        self.report["failures"] = self.failures
        try:
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            with open(a.out, "w") as f:
                json.dump(self.report, f, indent=1)
                f.write("\n")
            where = a.out
        except OSError as e:
            where = None
            self.failures.append(f"cannot write the report {a.out}: {e}")
        if self.failures:
            self.say("FAIL: " + "; ".join(self.failures))
            return 1
        rss = self.report.get("rss", {})
        worst = max((abs(s.get("rss_vs_baseline_pct", 0)) for s in self.samples), default=0)
        echoed = (self.report.get("final") or {}).get("stats", {}).get("engine", {}) \
            .get("messages_sent", 0)
        churn = self.report.get("churn", {})
        self.say(f"PASS ({a.backend}, {a.minutes:g} min: RSS baseline "
                 f"{mib(rss.get('baseline_kib'))}, worst {worst:.1f}% off; {echoed:,} messages "
                 f"echoed, no byte corrupted; {churn.get('runs', 0)} churn runs; counters "
                 f"balance; server exit 0; report {where})")
        return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    soak = Soak(args)
    for path in (soak.echo_bin, soak.load_bin):
        if not os.access(path, os.X_OK):
            print(f"ci/soak: {path} is not built (run ci/soak without IONET_SOAK_NO_BUILD, or "
                  f"cmake --build build/{PRESETS[args.backend]} --target ionet-echo ionet-load)",
                  file=sys.stderr)
            return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        soak.run()
    except KeyboardInterrupt:
        soak.fail("interrupted")
    finally:
        soak.kill_children()
    return soak.verdict()


if __name__ == "__main__":
    sys.exit(main())
