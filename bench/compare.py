#!/usr/bin/env python3
"""The benchmark comparison behind ci/bench.

Runs a matrix of scenarios against every server that is built: ionet on
each backend and the peers a user would pick instead (plain libuv, epoll,
asio and io_uring echo servers), and in the http cells wrk against
ionet-example-http_plaintext on each backend and against nginx (plaintext.py;
those cells' ratios are to nginx), and in the proxy cells the load through
ionet-example-proxy to ionet-echo against the load straight to ionet-echo
(their ratios are to that direct run). Servers are interleaved within each
repetition, so the runs compared are adjacent in time; every figure is a
median with its min-max, and every ratio is the median of per-repetition
ratios against the plain libuv peer. Writes bench/results/<date>-<host>.json
and beside it PNG charts and a markdown page (also printed): where ionet
wins and loses, issue 14's targets (met, missed by how much, or not run),
the commit, compiler, kernel and run time, the charts and the tables.
--replot rewrites the page and charts of an existing .json.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import plaintext
import scale
from harness import ROOT, Server, binary, pin, rss_tree_kib

BASELINE = "peer-libuv"
MEMORY_METRICS = ["rss_held_kib", "rss_per_conn_bytes", "rss_before_kib"]
HTTP_METRICS = ["requests_per_sec", "server_cpu_us_per_req", "p50_us", "p99_us",
                "server_cpu_pct", "wrk_cpu_pct", "socket_errors", "non_2xx"]

# name: (build folder, binary, what it is)
SERVERS = {
    "ionet-libuv": ("linux-release", "bench/ionet-echo", "ionet, libuv backend"),
    "ionet-libuv-pull": ("linux-release", "bench/ionet-echo",
                         "ionet, libuv backend, pull model (a user thread echoes)"),
    "ionet-uring": ("linux-uring-release", "bench/ionet-echo", "ionet, io_uring backend"),
    "ionet-uring-pull": ("linux-uring-release", "bench/ionet-echo",
                         "ionet, io_uring backend, pull model (a user thread echoes)"),
    "peer-libuv": ("linux-release", "bench/peers/peer-libuv-echo", "plain libuv echo"),
    "peer-epoll": ("linux-release", "bench/peers/peer-epoll-echo", "plain epoll echo"),
    "peer-asio": ("linux-release", "bench/peers/peer-asio-echo", "standalone asio echo"),
    "peer-uring": ("linux-release", "bench/peers/peer-uring-echo", "plain io_uring echo"),
    "proxy-libuv": ("linux-release", "examples/ionet-example-proxy",
                    "ionet-example-proxy --threads 1 in front of ionet-echo, libuv: "
                    "proxy cells only"),
    "proxy-uring": ("linux-uring-release", "examples/ionet-example-proxy",
                    "ionet-example-proxy --threads 1 in front of ionet-echo, io_uring: "
                    "proxy cells only"),
    "ionet-iocp-wine": ("mingw-iocp", "bench/ionet-echo.exe",
                        "ionet, IOCP backend under Wine: behaviour only, not speed"),
    # An absolute path: binary() keeps it as it is.
    "nginx": ("", plaintext.nginx_path(), "nginx (nginx-light), one worker: http cells only"),
}
WINE_ONLY = {"ionet-iocp-wine"}
# Servers run only in the cells that name them (to keep the run short): the
# pull model of each Linux backend, in the cells marked "+pull".
EXTRA = {"ionet-libuv-pull", "ionet-uring-pull"}
# The http cells: wrk against an HTTP "Hello, World!" server. The ionet rows
# there run the example below instead of ionet-echo (same build folder, one
# engine thread, as nginx has one worker); nginx runs only there, and is
# what those cells' ratios are to.
HTTP_ONLY = {"nginx"}
HTTP_BINARY = {"ionet-libuv": ("linux-release", "examples/ionet-example-http_plaintext"),
               "ionet-uring": ("linux-uring-release", "examples/ionet-example-http_plaintext")}
HTTP_BASE = "nginx"
HTTP_CONNECTIONS = (50, 1000)
# The proxy cells, one pair per backend: ionet-load straight to ionet-echo
# (the row ionet-<backend>, the cell's base) and through
# ionet-example-proxy --threads 1 to an ionet-echo of the same build (the
# row proxy-<backend>), run only there.
PROXY_ONLY = {"proxy-libuv", "proxy-uring"}
PROXY_ECHO = {"proxy-libuv": "ionet-libuv", "proxy-uring": "ionet-uring"}
PROXY_RATE = 10000
PROXY_METRICS = ["server_cpu_us_per_msg", "upstream_cpu_us_per_msg", "msgs_per_sec",
                 "p50_us", "p99_us", "problems"]


def cell(name, scenario, load, metrics, run_s, servers=None, note="", **more):
    """A cell of the matrix; run_s: the seconds one run of it takes (start,
    load, stop), for the estimate of the whole."""
    return {"name": name, "scenario": scenario, "load": load, "metrics": metrics,
            "servers": servers, "note": note, "run_s": run_s, **more}


def plan(args):
    """The cells to run, by scenario."""
    quick = args.quick
    rates = [50000] if quick else [20000, 50000, 80000]
    eff = ["server_cpu_us_per_msg", "p50_us", "p99_us", "p999_us", "msgs_per_sec",
           "late_sends", "skipped_sends"]
    sat = ["msgs_per_sec", "server_cpu_us_per_msg", "p99_us"]
    timed = args.duration + args.warmup + 0.3
    cells = []
    for r in rates:
        cells.append(cell(f"efficiency {r // 1000}k/s", "efficiency",
                          ["--connections", "1000", "--size", "512", "--inflight", "16",
                           "--rate", str(r)], eff, timed,
                          servers="+pull" if r == 50000 else None,
                          note=f"open loop, {r} msg/s offered over 1,000 connections x 512 B"))
    sats = [("saturation 100x64", ["--connections", "100", "--size", "64", "--inflight", "1"]),
            ("saturation 1000x512", ["--connections", "1000", "--size", "512", "--inflight", "1"]),
            ("saturation 4KiB", ["--connections", "100", "--size", "4096", "--inflight", "1"]),
            ("saturation pipelined16", ["--connections", "100", "--size", "64", "--inflight", "16"])]
    if quick:
        sats = sats[1:2]
    for name, load in sats:
        extra = {"saturation 100x64": "+wine", "saturation 1000x512": "+pull"}.get(name)
        cells.append(cell(name, "saturation", load, sat, timed, servers=extra,
                          note="closed loop"))
    n_idle = 2000 if quick else 10000
    cells.append(cell(f"memory {n_idle} idle", "memory",
                      ["--mode", "idle", "--connections", str(n_idle), "--hold", "1"],
                      MEMORY_METRICS, 1.5 + n_idle / 5000,
                      note=f"whole-server RSS (VmRSS) before the first client and while "
                           f"{n_idle:,} idle connections are held, and its growth per "
                           f"connection; ionet runs with --max-connections {n_idle} (its "
                           "pools sized for them)", max_connections=n_idle))
    n_burst = 5000 if quick else 15000
    cells.append(cell(f"accept burst {n_burst}", "burst",
                      ["--mode", "connect-burst", "--connections", str(n_burst)],
                      ["connect_seconds", "connect_failures"], 1.0 + n_burst / 10000,
                      note=f"{n_burst} connects as fast as possible"))
    # wrk's durations are whole seconds; the warm-up, when there is one, at
    # least 1.
    wrk_s = plaintext.wrk_seconds(args.duration)
    wrk_warm = plaintext.wrk_seconds(args.warmup) if args.warmup > 0 else 0
    for n in HTTP_CONNECTIONS:
        cells.append(cell(f"http {n} connections", "http",
                          plaintext.wrk_args(n, args.duration), HTTP_METRICS,
                          wrk_s + wrk_warm + 0.8 + n / 2000, base=HTTP_BASE, connections=n,
                          note=f"wrk, {plaintext.WRK_THREADS} thread, {n} keep-alive "
                               f"connections, GET / for {wrk_s} s (after {wrk_warm} s of "
                               "warm-up): ionet-example-http_plaintext with --threads 1 on "
                               "each backend against nginx with one worker; server CPU is "
                               "its utime+stime over the measured wrk run (its connects "
                               "included) per request answered; p50/p99 are wrk's "
                               "(closed loop); server_cpu_pct and wrk_cpu_pct: share of "
                               "a core each used over the run (one near 100 set the pace; "
                               "both low: the machine was busy elsewhere); a run with "
                               "socket errors or non-2xx/3xx answers is a problem and its "
                               "speed figures are left out"))
    proxy_load = ["--connections", "100", "--size", "512", "--inflight", "16"]
    proxy_note = ("ionet-load on core 1, 100 connections x 512 B, 16 in flight: to "
                  "ionet-echo directly (the base row) and through ionet-example-proxy "
                  "--threads 1 to an ionet-echo of the same build (the proxy row). With 2 "
                  "cores the proxy and the echo server behind it share core 0. "
                  "server_cpu_us_per_msg: the server the load talks to (in the proxy row: "
                  "the proxy alone); upstream_cpu_us_per_msg: the echo behind the proxy, "
                  "over the same window; problems: connection errors, connect failures, "
                  "stalled connections (an echo outstanding past the stall timeout at the "
                  "end: lost), corrupted bytes, and the proxy's failed upstream connections "
                  "and backlog resets; any is a problem, and that run's speed figures are "
                  "left out")
    for b in LINUX_BACKENDS:
        cells.append(cell(f"proxy {PROXY_RATE // 1000}k/s, {b}", "proxy",
                          proxy_load + ["--rate", str(PROXY_RATE)], PROXY_METRICS,
                          timed + 0.3, base=f"ionet-{b}", backend=b,
                          note=f"open loop, {PROXY_RATE:,} msg/s offered; " + proxy_note))
        if not quick:
            cells.append(cell(f"proxy saturation, {b}", "proxy", proxy_load,
                              PROXY_METRICS, timed + 0.3, base=f"ionet-{b}", backend=b,
                              note="closed loop; " + proxy_note))
    if not quick:
        cells.append(cell("instructions per message", "instructions",
                          ["--connections", "100", "--size", "512", "--inflight", "16",
                           "--rate", "2000"],
                          ["instructions_per_msg"], 25.0, servers="+pull",
                          note="callgrind, user space, 2,000 msg/s; two run lengths differenced"))
    if args.scenario:
        wanted = set(args.scenario)
        cells = [c for c in cells if c["scenario"] in wanted or c["name"] in wanted]
    return cells


# --- processes ---------------------------------------------------------------

def start(name, bins, cell_, wrap=()):
    """The server `name`, pinned to core 0 (the load runs on core 1)."""
    return Server(bins[name], ["--framing", "length_prefix"] + server_extra(name, cell_),
                  core=0, wrap=wrap, wine=name in WINE_ONLY)


def run_load(load_bin, port, cell_, args, server_pid, extra=()):
    cmd = pin(1) + [load_bin, "--host", "127.0.0.1", "--port", str(port),
                    "--framing", "length_prefix", "--server-pid", str(server_pid)]
    cmd += cell_["load"] + list(extra)
    if cell_["scenario"] in ("efficiency", "saturation", "instructions", "proxy"):
        cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    budget = args.duration + args.warmup + 120
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return None, "ionet-load timed out"
    try:
        return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr
    except (ValueError, IndexError):
        return None, p.stderr + p.stdout


def flatten(result):
    """The figures of one ionet-load run, by metric name."""
    out = dict(result)
    lat = result.get("latency_us", {})
    for k in ("p50", "p99", "p999", "max"):
        if k in lat:
            out[f"{k}_us"] = lat[k]
    return out


def server_extra(name, cell_):
    if not name.startswith("ionet"):
        return []
    # The engine refuses connections past --max-connections (default
    # 10,000): room for the burst cell; the memory cell sizes it for the
    # connections it holds.
    extra = ["--max-connections", str(cell_.get("max_connections", 16000))]
    if name.endswith("-pull"):
        extra += ["--delivery", "pull"]
    return extra


def one_run(name, cell_, args, bins):
    """Starts the server, drives it, stops it; returns (figures, error)."""
    if cell_["scenario"] == "instructions":
        return instructions_run(name, cell_, args, bins)
    if cell_["scenario"] == "http":
        return http_run(name, cell_, args, bins)
    if cell_["scenario"] == "proxy":
        return proxy_run(name, cell_, args, bins)
    srv = start(name, bins, cell_)
    if not srv.wait_listening():
        srv.stop()
        return None, f"{name} did not start: {srv.output_tail()}"
    figures, err = {}, None
    try:
        if cell_["scenario"] == "memory":
            figures, err = memory_run(srv, cell_, args, bins)
        else:
            result, log = run_load(bins["ionet-load"], srv.port, cell_, args, srv.proc.pid)
            if result is None:
                err = f"ionet-load failed: {log[-300:]}"
            else:
                figures = flatten(result)
                if result.get("corrupted_bytes", 0) or result.get("errors", 0):
                    err = f"corrupted {result.get('corrupted_bytes')} errors {result.get('errors')}"
    finally:
        srv.stop()
    rc = srv.proc.returncode
    if rc not in (0, None) and err is None and name not in WINE_ONLY:
        err = f"{name} exited with {rc}"
    return figures, err


def http_run(name, cell_, args, bins):
    """One http run: the server (pinned as start() pins), a warm-up wrk and
    the measured one (plaintext.measure)."""
    if name in HTTP_ONLY:
        srv = plaintext.Nginx(bins[name])
    else:
        srv = Server(bins[f"http:{name}"], ["--threads", "1"], core=plaintext.SERVER_CORE)
    if not srv.wait_listening():
        srv.stop()
        return None, f"{name} did not start: {srv.output_tail()}"
    try:
        warmup = plaintext.wrk_seconds(args.warmup) if args.warmup > 0 else 0
        figures, err = plaintext.measure(srv, cell_["connections"], args.duration, warmup)
    finally:
        srv.stop()
    rc = srv.proc.returncode
    if rc not in (0, None) and err is None:
        err = f"{name} exited with {rc}"
    return figures, err


def proxy_stall_s(duration):
    """ionet-load's --stall-timeout in the proxy cells: short enough that an
    echo lost early in the measured window is still outstanding past it at
    the end (the default, 2 s, outlasts a short run)."""
    return max(0.5, min(2.0, duration / 2))


def proxy_said(text):
    """The proxy's closing line on stderr: (upstream connections failed,
    links reset over the backlog cap), or None when it did not say."""
    m = re.search(r"([0-9]+) upstream connections failed, ([0-9]+) reset over the "
                  r"backlog cap", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def proxy_run(name, cell_, args, bins):
    """One proxy-cell run: ionet-echo of the cell's backend on core 0 and
    the load on core 1, the load straight to the echo (the row
    ionet-<backend>) or through ionet-example-proxy --threads 1, on core 0
    too (proxy-<backend>); ionet-load reads both servers' CPU over its
    window. A run in which anything was lost or went wrong has no speed
    figures (they are under "unclean") and an error that fails ci/bench."""
    echo = start(PROXY_ECHO.get(name, name), bins, cell_)
    servers = [echo]
    try:
        if not echo.wait_listening():
            return None, f"ionet-echo did not start: {echo.output_tail()}"
        front, extra = echo, []
        if name in PROXY_ONLY:
            front = Server(bins[name], ["--threads", "1",
                                        "--upstream", f"127.0.0.1:{echo.port}"], core=0)
            servers.insert(0, front)
            if not front.wait_listening():
                return None, f"{name} did not start: {front.output_tail()}"
            extra = ["--upstream-pid", str(echo.proc.pid)]
        extra += ["--stall-timeout", str(proxy_stall_s(args.duration))]
        result, log = run_load(bins["ionet-load"], front.port, cell_, args, front.proc.pid,
                               extra)
    finally:
        for srv in servers:  # the proxy first
            srv.stop()
    if result is None:
        return None, f"ionet-load failed: {log[-300:]}"
    figures = flatten(result)
    found = {k: result.get(k, 0) for k in ("errors", "connect_failures",
                                            "stalled_connections", "corrupted_bytes")}
    if name in PROXY_ONLY:
        said = proxy_said(servers[0].stderr_tail(2000))
        if said is None:
            found["proxy said nothing at exit"] = 1
        else:
            found["failed upstream connections"], found["backlog resets"] = said
    figures["problems"] = sum(found.values())
    problems = []
    if figures["problems"]:
        figures["unclean"] = {k: figures.pop(k) for k in PROXY_METRICS[:-1] if k in figures}
        problems.append("lost or errors: " + ", ".join(f"{k} {v}" for k, v in found.items()
                                                       if v) + "; speed figures left out")
    for what, srv in zip(([name] if name in PROXY_ONLY else []) + ["ionet-echo"], servers):
        if srv.proc.returncode not in (0, None):
            problems.append(f"{what} exited with {srv.proc.returncode}")
    return figures, "; ".join(problems) or None


def memory_run(srv, cell_, args, bins):
    ready = tempfile.NamedTemporaryFile(prefix="bench-ready-", delete=False)
    ready.close()
    os.unlink(ready.name)
    before = rss_tree_kib(srv.proc.pid)
    cmd = pin(1) + [bins["ionet-load"], "--host", "127.0.0.1", "--port", str(srv.port),
                    "--framing", "length_prefix", "--ready-file", ready.name] + cell_["load"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        try:
            with open(ready.name) as f:
                if f.read().startswith("ready"):
                    time.sleep(0.3)  # let the server settle its last accepts
                    held = rss_tree_kib(srv.proc.pid)
                    break
        except OSError:
            pass
        time.sleep(0.05)
    out, errs = p.communicate(timeout=180)
    try:
        os.unlink(ready.name)
    except OSError:
        pass
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, f"ionet-load (idle) failed: {errs[-300:]}"
    n = result.get("connected", 0)
    if before is None or held is None or n == 0:
        return None, "could not read the server's RSS while connections were held"
    figures = flatten(result)
    figures["rss_before_kib"] = before
    figures["rss_held_kib"] = held
    figures["rss_per_conn_bytes"] = round((held - before) * 1024 / n, 1)
    err = None
    if result.get("connect_failures", 0) or result.get("corrupted_bytes", 0):
        err = f"idle: {result.get('connect_failures')} connect failures"
    return figures, err


# Valgrind 3.19 runs io_uring_enter as a non-blocking call: a thread asleep
# in it keeps valgrind's single thread lock, so a multi-threaded io_uring
# server's other threads wait a whole scheduling quantum per tick (start-up
# alone took 7 minutes here). A single-threaded ring (peer-uring) is fine.
_URING_UNDER_VALGRIND = ("not measurable under valgrind 3.19: a loop thread asleep in "
                        "io_uring_enter keeps valgrind's thread lock and starves the "
                        "engine's other threads")
NO_CALLGRIND = {"ionet-uring": _URING_UNDER_VALGRIND,
                "ionet-uring-pull": _URING_UNDER_VALGRIND}


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return None


def instructions_run(name, cell_, args, bins):
    """User-space instructions per message: the server under callgrind,
    two load runs of different lengths, the difference divided by the
    extra messages (start-up and shutdown cancel out)."""
    if not shutil.which("valgrind"):
        return None, "valgrind is not installed"
    if name in NO_CALLGRIND:
        return None, NO_CALLGRIND[name]
    totals = []
    for seconds in (1.0, 3.0):
        outfile = tempfile.NamedTemporaryFile(prefix="callgrind-", delete=False)
        outfile.close()
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outfile.name}",
                "--dump-instr=no", "--collect-jumps=no"]
        srv = start(name, bins, cell_, wrap=wrap)
        if not srv.wait_listening(timeout=60):
            srv.stop()
            return None, f"{name} did not start under callgrind"
        sub = argparse.Namespace(duration=seconds, warmup=0.0)
        result, log = run_load(bins["ionet-load"], srv.port, cell_, sub, srv.proc.pid)
        srv.stop()
        total = callgrind_total(outfile.name)
        os.unlink(outfile.name)
        if result is None or total is None:
            return None, f"callgrind run failed: {log[-300:] if log else ''}"
        totals.append((total, result["messages"]))
    (i1, m1), (i2, m2) = totals
    if m2 <= m1:
        return None, "the longer run echoed no more messages than the shorter"
    return {"instructions_per_msg": round((i2 - i1) / (m2 - m1), 1),
            "messages_short": m1, "messages_long": m2}, None


# --- statistics and report ---------------------------------------------------

# The ratios the summary judges, how it names them, and which way is better
# (1: higher, -1: lower). Counts (late sends, failures) are not judged.
JUDGED = {"msgs_per_sec": ("msgs/s", 1), "server_cpu_us_per_msg": ("CPU/msg", -1),
          "requests_per_sec": ("req/s", 1), "server_cpu_us_per_req": ("CPU/req", -1),
          "p50_us": ("p50", -1), "p99_us": ("p99", -1), "p999_us": ("p99.9", -1),
          "rss_held_kib": ("RSS held", -1), "rss_per_conn_bytes": ("RSS/conn", -1),
          "rss_before_kib": ("RSS before", -1), "connect_seconds": ("connect time", -1),
          "instructions_per_msg": ("instructions/msg", -1)}


def summarize(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def ratio_summary(runs, name, metric, base=BASELINE):
    """Median of per-repetition ratios name/base (adjacent runs); base is
    the baseline unless said."""
    ratios = []
    for rep in runs:
        a = rep.get(name, {}).get(metric)
        b = rep.get(base, {}).get(metric)
        if a is not None and b:
            ratios.append(a / b)
    return summarize(ratios)


def summarize_cell(c):
    """A cell's summary and ratios (to its base: the baseline, or nginx in
    the http cells), per server and metric, from its runs."""
    runs = c["runs"]
    base = c.get("base", BASELINE)
    c["summary"] = {name: {m: summarize([r.get(name, {}).get(m) for r in runs])
                           for m in c["metrics"]} for name in c["servers"]}
    c["ratios"] = {name: {m: ratio_summary(runs, name, m, base=base) for m in c["metrics"]}
                   for name in c["servers"]}


def verdict(metric, r):
    """'win' or 'loss' against the baseline, or None: not judged, or the
    spread of the per-repetition ratios includes 1."""
    if metric not in JUDGED or not r or r["min"] <= 1.0 <= r["max"]:
        return None
    return "win" if (r["median"] > 1.0) == (JUDGED[metric][1] > 0) else "loss"


def fmt(x):
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_summary(s):
    if not s:
        return "-"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


def fmt_ratio(s):
    if not s:
        return ""
    if s["min"] <= 1.0 <= s["max"]:
        return f" ≈{s['median']:.2f}x"
    return f" {s['median']:.2f}x"


def summary_markdown(report):
    """Where each ionet row wins and loses against the baseline."""
    lines = [f"## Summary: ionet against {BASELINE}", "",
             f"Median ratios to `{BASELINE}` run next to it (in the http cells: to "
             f"`{HTTP_BASE}`, marked so). A win or a loss is a ratio whose "
             "whole min–max spread lies on that side of 1; higher is better for msgs/s "
             "and req/s, lower for CPU per message or request, latency, RSS, connect time "
             "and instructions. The other peers are in the tables; the Wine row (behaviour "
             "only) is left out."
             + (" With one repetition there is no spread: each ratio is one run's."
                if report["config"]["repetitions"] == 1 else ""), ""]
    for name in report["servers"]:
        if not name.startswith("ionet") or name in WINE_ONLY:
            continue
        found = {"win": [], "loss": [], None: []}
        for c in report["cells"]:
            for m in c["metrics"]:
                r = c["ratios"].get(name, {}).get(m)
                base = c.get("base", BASELINE)
                if m in JUDGED and r and name != base:
                    found[verdict(m, r)].append(
                        f"{c['name']}: {JUDGED[m][0]} {r['median']:.2f}x"
                        + (f" of {base}" if base != BASELINE else ""))
        lines.append(f"- **{name}**")
        lines.append(f"  - wins ({len(found['win'])}): {'; '.join(found['win']) or 'none'}")
        lines.append(f"  - losses ({len(found['loss'])}): {'; '.join(found['loss']) or 'none'}")
        lines.append(f"  - even ({len(found[None])}): spread includes 1")
    return "\n".join(lines) + "\n"


# --- targets (issue 14) ------------------------------------------------------

def target(what, cell_name, metric, server, op, bound, base=BASELINE, load=None):
    """A target: the median of the per-repetition ratios server/base of
    `metric` in the cell `cell_name` must be <= or >= (op) bound; with op
    "count" (and no base), the most `metric` reached in a repetition must
    be <= bound. `load`: the metric of the load generator's CPU share; when
    it was busy nearly all the time beside both servers, the verdict says
    that the ratio measures the load generator's limit."""
    return {"what": what, "cell": cell_name, "metric": metric, "server": server,
            "base": base, "op": op, "bound": bound, "load": load}


# A load generator's CPU share (%) at which it, not the server, sets the pace.
LOAD_BOUND_PCT = 95.0


def load_bound(t, c):
    """The load generator's median CPU share beside the slower-to-saturate
    of the target's two servers, when both ran it at LOAD_BOUND_PCT or
    more; else None."""
    if not t.get("load"):
        return None
    shares = []
    for name in (t["server"], t["base"]):
        seen = sorted(v for v in (rep.get(name, {}).get(t["load"]) for rep in c["runs"])
                      if v is not None)
        if not seen:
            return None
        shares.append(seen[len(seen) // 2])
    return min(shares) if min(shares) >= LOAD_BOUND_PCT else None


LINUX_BACKENDS = ("libuv", "uring")
# Issue 14's targets, each judged on one ci/bench run's data. The cells are
# named as plan() names them in a full run; a --quick run's memory cell
# holds fewer connections, so its target is "not run" there.
TARGETS = [
    *[target(f"pull model's CPU per message, {b}", "efficiency 50k/s",
             "server_cpu_us_per_msg", f"ionet-{b}-pull", "<=", 1.10, base=f"ionet-{b}")
      for b in LINUX_BACKENDS],
    *[target(f"pull model's throughput, {b}", "saturation 1000x512", "msgs_per_sec",
             f"ionet-{b}-pull", ">=", 0.90, base=f"ionet-{b}") for b in LINUX_BACKENDS],
    target("pipelined throughput, libuv", "saturation pipelined16", "msgs_per_sec",
           "ionet-libuv", ">=", 0.95),
    target("pipelined throughput, uring", "saturation pipelined16", "msgs_per_sec",
           "ionet-uring", ">=", 1.0),
    *[target(f"throughput, {b}", c, "msgs_per_sec", f"ionet-{b}", ">=", 0.95)
      for c in ("saturation 1000x512", "saturation 4KiB") for b in LINUX_BACKENDS],
    *[target("CPU per message, libuv", f"efficiency {r}k/s", "server_cpu_us_per_msg",
             "ionet-libuv", "<=", 1.03) for r in (20, 50, 80)],
    # Directly against peer-epoll: per repetition the same as comparing the
    # two servers' ratios to peer-libuv.
    *[target("CPU per message, uring", f"efficiency {r}k/s", "server_cpu_us_per_msg",
             "ionet-uring", "<=", 1.0, base="peer-epoll") for r in (20, 50, 80)],
    target("user-space instructions per message, libuv", "instructions per message",
           "instructions_per_msg", "ionet-libuv", "<=", 1.25),
    target("pull model's user-space instructions per message, libuv",
           "instructions per message", "instructions_per_msg", "ionet-libuv-pull", "<=", 1.5),
    *[target(f"RSS holding 10,000 idle connections, {b}", "memory 10000 idle",
             "rss_held_kib", f"ionet-{b}", "<=", 1.0) for b in LINUX_BACKENDS],
]
# The http targets: ionet-example-http_plaintext against nginx at each
# connection count: as many requests a second, a tenth less server CPU per
# request.
TARGETS += [
    *[target(f"HTTP requests/s, {b}", f"http {n} connections", "requests_per_sec",
             f"ionet-{b}", ">=", 1.0, base=HTTP_BASE, load="wrk_cpu_pct")
      for n in HTTP_CONNECTIONS for b in LINUX_BACKENDS],
    *[target(f"HTTP server CPU per request, {b}", f"http {n} connections",
             "server_cpu_us_per_req", f"ionet-{b}", "<=", 0.90, base=HTTP_BASE)
      for n in HTTP_CONNECTIONS for b in LINUX_BACKENDS],
]
# The proxy targets: ionet-example-proxy costs at most twice the CPU per
# message of the echo server it fronts (that server run alone, next to it),
# and loses nothing, in every repetition of every proxy cell. The quick
# run has only the fixed-rate cells.
PROXY_CELLS = (f"proxy {PROXY_RATE // 1000}k/s", "proxy saturation")
TARGETS += [
    *[target(f"proxy's CPU per message, {b}", f"{c}, {b}", "server_cpu_us_per_msg",
             f"proxy-{b}", "<=", 2.0, base=f"ionet-{b}")
      for c in PROXY_CELLS for b in LINUX_BACKENDS],
    *[target(f"nothing lost through the proxy, {b}", f"{c}, {b}", "problems", f"proxy-{b}",
             "count", 0, base=None)
      for c in PROXY_CELLS for b in LINUX_BACKENDS],
]


def judge_target(t, cells):
    """A target against a run's cells: the target with `ratio` (a
    ratio_summary, or None) and `result`: "met", "missed by X%", "not run:
    why" (the cell or a server did not run) or "no data" (they ran and gave
    no figure)."""
    out = dict(t, ratio=None)
    c = cells.get(t["cell"])
    if c is None:
        out["result"] = "not run: no such cell in this run"
        return out
    missing = [n for n in (t["server"], t["base"]) if n and n not in c["servers"]]
    if missing:
        out["result"] = f"not run: {' and '.join(missing)} not in this cell"
        return out
    if t["op"] == "count":
        seen = [v for v in (rep.get(t["server"], {}).get(t["metric"]) for rep in c["runs"])
                if v is not None]
        if not seen:
            said = [e for e in c.get("errors", []) if e.startswith(f"{t['server']} ")]
            out["result"] = "no data" + (f": {said[0]}" if said else "")
            return out
        out["count"] = {"max": max(seen), "n": len(seen)}
        out["result"] = "met" if max(seen) <= t["bound"] else f"missed: {max(seen)}"
        return out
    r = ratio_summary(c["runs"], t["server"], t["metric"], base=t["base"])
    if r is None:
        said = [e for e in c.get("errors", [])
                if e.startswith(f"{t['server']} ") or e.startswith(f"{t['base']} ")]
        out["result"] = "no data" + (f": {said[0]}" if said else "")
        return out
    out["ratio"] = r
    m, b = r["median"], t["bound"]
    if (m <= b) if t["op"] == "<=" else (m >= b):
        out["result"] = "met"
    else:
        # How far the median is from the target, as a share of the target.
        out["result"] = f"missed by {abs(m / b - 1) * 100:.1f}%"
    busy = load_bound(t, c)
    if busy is not None:
        # Both servers answered as fast as the load asked: the ratio is
        # the load generator's, so either verdict says little.
        out["result"] += f" (load-bound: wrk at {busy:.0f}% of its core)"
    return out


def targets(report):
    """Every target judged on the report's cells."""
    cells = {c["name"]: c for c in report["cells"]}
    return [judge_target(t, cells) for t in TARGETS]


def targets_markdown(judged):
    lines = ["## Targets", "",
             "Issue 14's targets, then the http targets (ionet-example-http_plaintext "
             f"against {HTTP_BASE}), then the proxy ones (ionet-example-proxy's CPU per "
             "message against ionet-echo's run alone, and its problems: what was lost or "
             "went wrong, the most in any repetition, which must be 0), on this run. "
             "Measured: the median of the per-repetition "
             "ratios of the two servers run next to each other (min–max over the "
             "repetitions, n of them); \"missed by X%\": how far that median is from the "
             "target, as a share of the target. ionet-uring's CPU per message is divided by "
             "peer-epoll's directly (per repetition the same as comparing the two "
             f"servers' ratios to `{BASELINE}`). A target whose cell or server did not "
             "run here is \"not run\", with what is missing; \"no data\" when it ran "
             "and gave no figure. \"load-bound\": wrk was busy at least "
             f"{LOAD_BOUND_PCT:.0f}% of its core beside both servers, so that "
             "requests/s ratio is wrk's pace, not the servers'.", "",
             "| what | cell | ratio | measured | target | result |",
             "|---|---|---|---|---|---|"]
    for t in judged:
        r = t["ratio"]
        if t["op"] == "count":
            n = t.get("count")
            measured = f"{n['max']} (most in a run, n={n['n']})" if n else "-"
            lines.append(f"| {t['what']} | {t['cell']} | {t['metric']}: {t['server']} | "
                         f"{measured} | ≤ {t['bound']} | {t['result']} |")
            continue
        if r is None:
            measured = "-"
        elif r["n"] == 1 or r["min"] == r["max"]:
            measured = f"{r['median']:.2f}x (n={r['n']})"
        else:
            measured = f"{r['median']:.2f}x ({r['min']:.2f}–{r['max']:.2f}, n={r['n']})"
        name = JUDGED.get(t["metric"], (t["metric"],))[0]
        sign = "≤" if t["op"] == "<=" else "≥"
        lines.append(f"| {t['what']} | {t['cell']} | {name}: {t['server']} ÷ {t['base']} | "
                     f"{measured} | {sign} {t['bound']:.2f}x | {t['result']} |")
    counts = {k: sum(1 for t in judged if t["result"].startswith(k))
              for k in ("met", "missed", "not run", "no data")}
    lines += ["", ", ".join(f"{v} {k}" for k, v in counts.items() if v) + "."]
    return "\n".join(lines) + "\n"


def fmt_time(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(report, charts):
    """The results page: the run, the summary, the charts, the tables."""
    m, run = report["machine"], report.get("run")
    lines = [f"# ionet benchmark comparison — {report['date']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, "
             f"Linux {m['kernel']}. Server pinned to core 0, load to core 1. "
             f"{report['config']['repetitions']} interleaved repetitions; figures are "
             "median (min–max); ratios are medians of per-repetition ratios against "
             f"`{BASELINE}` (http cells: `{HTTP_BASE}`) run next to it in time; ≈ marks "
             "a ratio whose spread includes 1.",
             ""]
    if run:
        lines += [f"Commit `{run['commit']}` (the checkout that ran ci/bench), compiler "
                  f"`{run['compiler']}`, kernel `{run['kernel']}`. The run took "
                  f"{fmt_time(run['elapsed_s'])} (the plan estimated "
                  f"{fmt_time(run['estimate_s'])}; building is not counted).", ""]
    else:
        lines += ["Commit, compiler and run time: not recorded (this results file predates "
                  "them).", ""]
    lines.append(summary_markdown(report))
    lines.append(targets_markdown(targets(report)))
    if charts:
        lines += ["## Charts", "",
                  "Error bars span min–max over the repetitions (on ratio charts, of the "
                  f"per-repetition ratios to `{BASELINE}`, or `{HTTP_BASE}` on the HTTP "
                  "chart, or ionet-echo run alone on the proxy chart, which is the dashed "
                  "line at 1); "
                  "linear axes start at zero. The Wine row is left out: it runs only in "
                  "saturation 100x64, for behaviour, not speed.", ""]
        lines += [f"![{title}]({os.path.basename(png)})" for png, title in charts] + [""]
    for c in report["cells"]:
        lines.append(f"## {c['name']}")
        if c["note"]:
            lines.append(f"_{c['note']}_")
        lines.append("")
        metrics = c["metrics"]
        lines.append("| server | " + " | ".join(metrics) + " |")
        lines.append("|---" * (len(metrics) + 1) + "|")
        base = c.get("base", BASELINE)
        for name in c["servers"]:
            row = [name + (" (Wine)" if name in WINE_ONLY else "")]
            for m in metrics:
                s = c["summary"].get(name, {}).get(m)
                r = c["ratios"].get(name, {}).get(m) if name != base else None
                row.append(fmt_summary(s) + fmt_ratio(r))
            lines.append("| " + " | ".join(row) + " |")
        if c["errors"]:
            lines.append("")
            for e in c["errors"][:6]:
                lines.append(f"- problem: {e}")
        lines.append("")
    return "\n".join(lines)


# --- plots (gnuplot) ---------------------------------------------------------

def color(name):
    """Bar colour: ionet blue (its pull model lighter), the peers grey, the
    baseline darker."""
    if name.startswith("ionet"):
        return 0x7fb2e5 if name.endswith("-pull") else 0x2c6fbb
    return 0x505050 if name in (BASELINE, HTTP_BASE) else 0xa8a8a8


def chart_servers(c):
    """A cell's servers as charted: ionet's rows first, no Wine row."""
    names = [n for n in c["servers"] if n not in WINE_ONLY]
    return sorted(names, key=lambda n: not n.startswith("ionet"))


def ratio_panel(c, metric, data, title=None):
    """One cell's ratios of `metric` to its base (the baseline, or nginx in
    the http cells), with their min-max: (gnuplot commands, or None when
    there is no ratio to draw). Titled with the cell's name unless said."""
    rows = [(n, c["ratios"].get(n, {}).get(metric)) for n in chart_servers(c)]
    rows = [(n, r) for n, r in rows if r]
    if not rows:
        return None
    with open(data, "w") as f:
        for i, (n, r) in enumerate(rows):
            f.write(f'{i} "{n}" {r["median"]} {r["min"]} {r["max"]} {color(n)}\n')
    top = 1.2 * max([1.0] + [r["max"] for _, r in rows])
    return [f'set title "{title or c["name"]}"', f"set xrange [-0.6:{len(rows) - 0.4}]",
            f"set yrange [0:{top}]", "unset logscale y",
            f'plot "{data}" using 1:3:(0.7):6:xtic(2) with boxes lc rgb variable notitle, '
            f'"" using 1:3:4:5 with yerrorbars lc "black" pt 7 ps 0.3 notitle, '
            f'"" using 1:5:(sprintf("%.2f", $3)) with labels offset 0,0.7 notitle, '
            f'1 with lines dt 2 lc "black" notitle']


def bars_panel(title, rows, series, data, log=False, label="%.0f"):
    """Clustered bars: rows [(server, [(median, min, max) or None per
    series])], one bar per series [(name, colour)], min-max error bars, the
    median written above in the printf format `label`."""
    width = 0.8 / len(series)
    with open(data, "w") as f:
        for i, (n, vals) in enumerate(rows):
            f.write(f'{i} "{n}"')
            for v in vals:
                f.write(" NaN NaN NaN" if v is None else f" {v[0]} {v[1]} {v[2]}")
            f.write("\n")
    values = [x for _, vals in rows for v in vals if v for x in v]
    if not values:
        return None
    cmds = [f'set title "{title}"', f"set xrange [-0.6:{len(rows) - 0.4}]",
            "set key below horizontal" if len(series) > 1 else "unset key"]
    if log:
        low = 10 ** math.floor(math.log10(max(min(values), 1e-9)))
        cmds += ["set logscale y", f"set yrange [{low}:{max(values) * 3}]"]
    else:
        cmds += ["unset logscale y", f"set yrange [0:{max(values) * 1.2}]"]
    plots = []
    for j, (name, rgb) in enumerate(series):
        x = f"($1+{(j - (len(series) - 1) / 2) * width})"
        col = 3 + 3 * j
        plots.append(f'"{data}" using {x}:{col}:({width * 0.9}){":xtic(2)" if j == 0 else ""} '
                     f'with boxes lc rgb "{rgb}" title "{name}"')
        plots.append(f'"" using {x}:{col}:{col + 1}:{col + 2} with yerrorbars lc "black" '
                     "pt 7 ps 0.3 notitle")
        plots.append(f'"" using {x}:{col + 2}:(sprintf("{label}", ${col})) with labels '
                     "offset 0,0.6 font \",8\" notitle")
    return cmds + ["plot " + ", ".join(plots)]


def gnuplot(png, title, panels, work, panel_size=(620, 400), cols=2):
    """Draws the panels (lists of gnuplot commands) into one PNG, `cols` to
    a row; True when gnuplot made it."""
    panels = [p for p in panels if p]
    if not panels:
        return False
    cols = min(cols, len(panels))
    rows = (len(panels) + cols - 1) // cols
    script = [f'set terminal pngcairo size {panel_size[0] * cols},{panel_size[1] * rows + 60} '
              'noenhanced font ",10"', f'set output "{png}"',
              "set style fill solid 0.85 border -1", "set grid ytics", "set xtics rotate by -25",
              f'set multiplot layout {rows},{cols} title "{title}"']
    for p in panels:
        script += p
    script.append("unset multiplot")
    path = os.path.join(work, os.path.basename(png) + ".gp")
    with open(path, "w") as f:
        f.write("\n".join(script) + "\n")
    p = subprocess.run(["gnuplot", path], capture_output=True, text=True)
    if p.returncode != 0:
        print(f"ci/bench: gnuplot failed on {png}: {p.stderr[-300:]}", file=sys.stderr)
    return p.returncode == 0


def plots(report, stem):
    """PNGs with gnuplot, one panel per cell: [(path, title)]."""
    if not shutil.which("gnuplot"):
        return []
    work = tempfile.mkdtemp(prefix="bench-plot-")
    by = {s: [c for c in report["cells"] if c["scenario"] == s]
          for s in ("saturation", "efficiency", "memory", "http", "proxy")}
    made = []

    def chart(suffix, title, panels, **kw):
        png = f"{stem}-{suffix}.png"
        if gnuplot(png, title, panels, work, **kw):
            made.append((png, title))

    def data(c, what):
        return os.path.join(work, f"{report['cells'].index(c)}-{what}.dat")

    chart("throughput", f"Saturation throughput: msgs/s ÷ {BASELINE} (higher is better)",
          [ratio_panel(c, "msgs_per_sec", data(c, "tp")) for c in by["saturation"]])
    chart("cpu", f"Server CPU per message at fixed rates ÷ {BASELINE} (lower is better)",
          [ratio_panel(c, "server_cpu_us_per_msg", data(c, "cpu")) for c in by["efficiency"]])
    chart("http", f"HTTP plaintext (wrk) ÷ {HTTP_BASE}",
          [p for c in by["http"] for p in (
              ratio_panel(c, "requests_per_sec", data(c, "rps"),
                          title=f"{c['name']}: requests/s (higher is better)"),
              ratio_panel(c, "server_cpu_us_per_req", data(c, "cpr"),
                          title=f"{c['name']}: server CPU per request (lower is better)"))])

    chart("proxy", "ionet-example-proxy ÷ ionet-echo alone",
          [p for c in by["proxy"] for p in (
              ratio_panel(c, "server_cpu_us_per_msg", data(c, "pcpu"),
                          title=f"{c['name']}: server CPU per message (target ≤ 2)"),
              ratio_panel(c, "msgs_per_sec", data(c, "pmps"),
                          title=f"{c['name']}: msgs/s (higher is better)")
              if c["name"].startswith("proxy saturation") else None)])

    def stat(c, n, m, scale=1.0):
        s = c["summary"].get(n, {}).get(m)
        return None if not s else (s["median"] / scale, s["min"] / scale, s["max"] / scale)

    pct = [("p50", "#9ecae1"), ("p99", "#3182bd"), ("p99.9", "#08519c")]
    chart("latency", "Latency at fixed rates (µs, log scale; lower is better)",
          [bars_panel(c["name"], [(n, [stat(c, n, m) for m in ("p50_us", "p99_us", "p999_us")])
                                  for n in chart_servers(c)], pct, data(c, "lat"), log=True)
           for c in by["efficiency"]], panel_size=(1100, 360), cols=1)
    mem = []
    for c in by["memory"]:
        servers = chart_servers(c)
        mem.append(bars_panel(
            f"{c['name']}: whole-server RSS (MiB)",
            [(n, [stat(c, n, "rss_before_kib", 1024), stat(c, n, "rss_held_kib", 1024)])
             for n in servers],
            [("before the first client", "#a8a8a8"), ("connections held", "#2c6fbb")],
            data(c, "rss"), label="%.1f"))
        mem.append(bars_panel(
            f"{c['name']}: RSS growth per connection (bytes)",
            [(n, [stat(c, n, "rss_per_conn_bytes")]) for n in servers],
            [("bytes per connection", "#2c6fbb")], data(c, "conn")))
    chart("memory", "Server memory with idle connections (lower is better)", mem)
    shutil.rmtree(work, ignore_errors=True)
    return made


def micro_benchmarks(args):
    """bench/micro (Google Benchmark) of common/, when it is built."""
    path = binary("linux-release", "bench/micro/ionet-micro")
    if not os.path.exists(path):
        return None
    min_time = "0.05" if args.quick else "0.2"
    p = subprocess.run(pin(0) + [path, f"--benchmark_min_time={min_time}",
                                 "--benchmark_format=json"],
                       capture_output=True, text=True, timeout=600)
    try:
        data = json.loads(p.stdout)
    except ValueError:
        return {"error": p.stderr[-300:]}
    return [{"name": b["name"], "ns": round(b["real_time"], 1),
             "items_per_second": b.get("items_per_second")}
            for b in data.get("benchmarks", [])]


def micro_markdown(micro):
    if not micro or isinstance(micro, dict):
        return ""
    lines = ["## common/ microbenchmarks (bench/micro, one run)", "",
             "| benchmark | ns per iteration | items/s |", "|---|---|---|"]
    for b in micro:
        ips = b["items_per_second"]
        lines.append(f"| {b['name']} | {fmt(b['ns'])} | {fmt(ips) if ips else '-'} |")
    return "\n".join(lines) + "\n"


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = None
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
            "kernel": platform.release(), "memory_kib": mem_kib,
            "python": platform.python_version()}


def provenance():
    """The checkout's commit, the compiler of the linux-release build, the kernel."""
    def first_line(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        lines = p.stdout.strip().splitlines()
        return lines[0].strip() if p.returncode == 0 and lines else None

    commit = first_line(["git", "-C", ROOT, "rev-parse", "HEAD"]) or "unknown"
    if first_line(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]):
        commit += "-dirty"
    compiler = "c++"
    try:
        with open(binary("linux-release", "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_CXX_COMPILER:"):
                    compiler = line.split("=", 1)[1].strip()
    except OSError:
        pass
    return {"commit": commit,
            "compiler": first_line([compiler, "--version"]) or f"{compiler} (no --version)",
            "kernel": platform.release()}


def write_pages(report, stem):
    """STEM.md and STEM-*.png from a report; (the markdown, [(png, title)])."""
    charts = plots(report, stem)
    md = markdown(report, charts) + "\n" + micro_markdown(report.get("micro"))
    if report.get("concurrent_connections"):
        md += "\n" + scale.markdown(report["concurrent_connections"])
    with open(stem + ".md", "w") as f:
        f.write(md)
    return md, charts


def replot(path):
    """--replot: the .md and PNGs of a results .json, from its runs (so the
    figures added since it was written, such as rss_held_kib, are there)."""
    with open(path) as f:
        report = json.load(f)
    for c in report["cells"]:
        if c["scenario"] == "memory":
            c["metrics"] = MEMORY_METRICS
            if "max_connections" not in c:
                c["note"] += ("; ionet ran with --max-connections 16000 (room for the "
                              "burst cell), not sized for these connections")
        summarize_cell(c)
    stem = path[:-len(".json")]
    _, charts = write_pages(report, stem)
    print(f"ci/bench: wrote {stem}.md and {len(charts)} plots", file=sys.stderr)
    return 0


def main():
    p = argparse.ArgumentParser(
        prog="ci/bench",
        description="Benchmark comparison: ionet's backends against the servers a user "
                    "would pick instead.")
    p.add_argument("--quick", action="store_true", help="one repetition of a smaller matrix (a few minutes)")
    p.add_argument("--repetitions", type=int, default=None, help="interleaved repetitions (default 5; 1 with --quick)")
    p.add_argument("--duration", type=float, default=None,
                   help="measured seconds per run (default 2; 1 with --quick); wrk, in "
                        "the http cells, takes the nearest whole number, at least 1")
    p.add_argument("--warmup", type=float, default=0.5,
                   help="seconds of load before measuring (default 0.5); the http cells' "
                        "wrk warm-up is rounded the same way (none when 0)")
    p.add_argument("--scenario", action="append",
                   choices=["efficiency", "saturation", "memory", "burst", "instructions", "http",
                            "proxy", "scale"],
                   help="only this scenario (repeatable); 'http' is wrk against "
                        "ionet-example-http_plaintext on each ionet Linux backend and "
                        "against nginx, at 50 and 1,000 connections; 'proxy' is the load "
                        "through ionet-example-proxy to ionet-echo against the load "
                        "straight to ionet-echo, on each Linux backend; 'scale' (65,000 and "
                        "100,000 concurrent connections on each ionet Linux backend, "
                        "several minutes) runs only when named")
    p.add_argument("--scale-targets", default="65000,100000",
                   help="scale: comma list of connection counts (default 65000,100000)")
    p.add_argument("--hold", type=float, default=60.0,
                   help="scale: seconds the connections are held (default 60)")
    p.add_argument("--servers", default=None, help="comma list of servers (default: all that are built); known: " + ", ".join(SERVERS))
    p.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                   help="another server binary to run beside the others (repeatable), "
                        "e.g. ionet-uring-before=/tmp/old/build/linux-uring-release/bench/ionet-echo: "
                        "an A/B comparison in one interleaved run; a NAME starting with "
                        "'ionet' gets ionet-echo's flags")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="where results go")
    p.add_argument("--dry-run", action="store_true", help="print the plan and check the binaries, run nothing")
    p.add_argument("--replot", metavar="JSON",
                   help="run nothing: re-read a results .json and rewrite its .md and PNGs "
                        "beside it")
    args = p.parse_args()
    if args.replot:
        if not os.path.isfile(args.replot) or not args.replot.endswith(".json"):
            p.error(f"--replot: {args.replot} is not a results .json file")
        return 0 if args.dry_run else replot(args.replot)
    started = time.monotonic()
    if args.repetitions is None:
        args.repetitions = 1 if args.quick else 5
    if args.duration is None:
        args.duration = 1.0 if args.quick else 2.0
    if args.repetitions < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--repetitions must be >= 1, --duration > 0 and --warmup >= 0")
    try:
        args.scale_targets = [int(x) for x in args.scale_targets.split(",")]
    except ValueError:
        p.error(f"--scale-targets: '{args.scale_targets}' is not a comma list of integers")
    if any(t < 1 or t > 200000 for t in args.scale_targets):
        p.error("--scale-targets: each count must be in 1..200000")
    if not 10 <= args.hold <= 3600:
        p.error("--hold must be between 10 and 3600 seconds")

    bins = {"ionet-load": binary("linux-release", "bench/ionet-load")}
    wanted = args.servers.split(",") if args.servers else list(SERVERS)
    for spec in args.also:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            p.error(f"--also: '{spec}' is not NAME=PATH")
        if name in SERVERS:
            p.error(f"--also: '{name}' is already a server's name")
        if not os.path.isfile(path) and not args.dry_run:
            p.error(f"--also: {path} does not exist")
        SERVERS[name] = ("", os.path.abspath(path), f"{path} (--also)")
        wanted.append(name)
    for w in wanted:
        if w not in SERVERS:
            p.error(f"--servers: unknown server '{w}' (known: {', '.join(SERVERS)})")
    servers = []
    cells = plan(args)
    has_http = any(c["scenario"] == "http" for c in cells)
    for name in wanted:
        build, rel, _ = SERVERS[name]
        path = binary(build, rel)
        missing = "not installed (ci/bootstrap installs it)" if name in HTTP_ONLY else "not built"
        if os.path.exists(path):
            bins[name] = path
            servers.append(name)
        elif args.servers and not args.dry_run:
            p.error(f"--servers: {name} is {missing} ({path})")
        elif name not in HTTP_ONLY or has_http:
            print(f"ci/bench: {name} is {missing} ({path}); left out", file=sys.stderr)
    # The http cells' ionet rows: the example, built beside ionet-echo.
    for name in servers:
        if name in HTTP_BINARY and has_http:
            path = binary(*HTTP_BINARY[name])
            if os.path.exists(path):
                bins[f"http:{name}"] = path
            else:
                print(f"ci/bench: {path} is not built; {name} is left out of the http cells",
                      file=sys.stderr)
    if has_http and not shutil.which("wrk") and not args.dry_run:
        if "http" in (args.scenario or []):
            print("ci/bench: wrk is not installed (ci/bootstrap installs it)", file=sys.stderr)
            return 1
        print("ci/bench: wrk is not installed (ci/bootstrap installs it); the http cells "
              "are left out", file=sys.stderr)
        cells = [c for c in cells if c["scenario"] != "http"]
    echo_cells = any(c["scenario"] != "http" for c in cells)
    if echo_cells and not os.path.exists(bins["ionet-load"]) and not args.dry_run:
        print(f"ci/bench: {bins['ionet-load']} is missing: build linux-release first", file=sys.stderr)
        return 1
    if BASELINE not in servers and echo_cells:
        print(f"ci/bench: the baseline {BASELINE} is not built; ratios are left out", file=sys.stderr)

    # A proxy cell needs its backend's echo server and proxy.
    for c in [c for c in cells if c["scenario"] == "proxy"]:
        missing = [n for n in (c["base"], f"proxy-{c['backend']}") if n not in servers]
        if missing:
            print(f"ci/bench: the cell {c['name']} is left out ({' and '.join(missing)} "
                  "not run)", file=sys.stderr)
            cells.remove(c)

    work = []  # (cell index, repetition, server)
    for i, c in enumerate(cells):
        names = [s for s in servers if s not in WINE_ONLY and s not in EXTRA
                 and s not in HTTP_ONLY and s not in PROXY_ONLY]
        if c["scenario"] == "proxy":
            names = [c["base"], f"proxy-{c['backend']}"]
        if c["scenario"] == "http":
            names = [s for s in servers if f"http:{s}" in bins or s in HTTP_ONLY]
        if c["servers"] == "+wine":
            names += [s for s in servers if s in WINE_ONLY]
        if c["servers"] == "+pull":
            names += [s for s in servers if s in EXTRA]
        if c["scenario"] == "instructions":
            names = [s for s in names if s not in WINE_ONLY]
        c["servers"] = names
        reps = 1 if c["scenario"] == "instructions" else args.repetitions
        for rep in range(reps):
            for name in names:
                work.append((i, rep, name))
    estimate = sum(cells[i]["run_s"] for i, _, _ in work)
    if not args.scenario:
        estimate += 10  # bench/micro
    run_scale = bool(args.scenario and "scale" in args.scenario)
    scale_servers = [s for s in servers if s in ("ionet-libuv", "ionet-uring")]
    if run_scale:
        estimate += len(scale_servers) * len(args.scale_targets) * (args.hold + 60)
        if "ionet-iocp-wine" in servers:
            estimate += 2 * 60
    print(f"ci/bench: {len(work)} runs over {len(cells)} cells and {len(servers)} servers, "
          f"about {fmt_time(estimate)}", file=sys.stderr)
    if args.dry_run:
        for c in cells:
            print(f"  {c['name']}: {', '.join(c['servers'])} x "
                  f"{1 if c['scenario'] == 'instructions' else args.repetitions}: {' '.join(c['load'])}")
        if run_scale:
            print(f"  scale: {', '.join(scale_servers)} at "
                  f"{', '.join(f'{t:,}' for t in args.scale_targets)} connections, "
                  f"held {args.hold:.0f} s")
        return 0

    results = {}  # (cell, rep, server) -> figures
    errors = {}
    for k, (i, rep, name) in enumerate(work):
        c = cells[i]
        figures, err = one_run(name, c, args, bins)
        results[(i, rep, name)] = figures or {}
        if err:
            errors.setdefault(i, []).append(f"{name} r{rep + 1}: {err}")
        done_s = time.monotonic() - started
        left = done_s / (k + 1) * (len(work) - k - 1)
        shown = ", ".join(f"{m} {fmt((figures or {}).get(m))}" for m in c["metrics"][:3])
        print(f"ci/bench: [{k + 1}/{len(work)}] {c['name']} r{rep + 1} {name}: "
              f"{shown}{' PROBLEM: ' + err if err else ''} (~{left / 60:.1f} min left)",
              file=sys.stderr, flush=True)

    report = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "servers": servers,
              "config": {"repetitions": args.repetitions, "duration_s": args.duration,
                         "warmup_s": args.warmup, "quick": args.quick,
                         "baseline": BASELINE},
              "run": {**provenance(), "estimate_s": round(estimate)},
              "cells": []}
    failed = False
    for i, c in enumerate(cells):
        reps = 1 if c["scenario"] == "instructions" else args.repetitions
        c["runs"] = [{name: results.get((i, rep, name), {}) for name in c["servers"]}
                     for rep in range(reps)]
        c["errors"] = errors.get(i, [])
        summarize_cell(c)
        report["cells"].append(c)
        # Corrupted echoes, ionet-load's errors, wrk's socket errors and bad
        # statuses ("http errors"), and whatever a proxy cell lost ("lost or
        # errors") fail the run.
        if any("corrupted" in e or "errors" in e for e in errors.get(i, [])):
            failed = True

    if run_scale:
        def log(msg):
            print(f"ci/bench: {msg}", file=sys.stderr, flush=True)
        rows = scale.run(scale_servers, bins, args.scale_targets, args.hold, log)
        if "ionet-iocp-wine" in servers:
            for target in (17500, 20000):
                figures, problems = scale.wine_ceiling(bins, target, 10.0, log)
                figures["problems"] = problems
                rows.append(figures)
        report["concurrent_connections"] = rows
        if any(r.get("corrupted_bytes") or r.get("errors") for r in rows):
            failed = True

    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%MZ")
    stem = os.path.join(args.out, f"{stamp}-{report['machine']['host']}")
    report["micro"] = None if args.scenario else micro_benchmarks(args)
    report["run"]["elapsed_s"] = round(time.monotonic() - started, 1)
    print(f"ci/bench: took {fmt_time(report['run']['elapsed_s'])} (estimated "
          f"{fmt_time(estimate)})", file=sys.stderr)
    md, charts = write_pages(report, stem)
    report["targets"] = targets(report)
    report["plots"] = [os.path.basename(png) for png, _ in charts]
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    print(md)
    print(f"ci/bench: wrote {stem}.json, {stem}.md and {len(charts)} plots", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
