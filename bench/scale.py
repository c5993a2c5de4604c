"""The scale scenario of ci/bench: tens of thousands of concurrent connections.

One process may hold at most 20,000 open files here and one client address
has 28,232 ephemeral ports, so both sides spread out: the server is
`ionet-echo --processes P` (P workers sharing the port through SO_REUSEPORT,
each with its own engine) and the load is L `ionet-load` processes whose
connections are bound to 127.0.0.2, 127.0.0.3, ... before connecting.

Every connection sends one small message a second (open loop) for the
hold; every echoed byte is checked. Reported per server and target, under
`concurrent_connections` in the JSON: connections reached (and the server's
own count of established sockets, read with ss), connect failures, time to
all established, the server's RSS in total and per connection (all of its
processes), its CPU % over the hold, p50/p99 latency, corrupted bytes.
"""
import json
import math
import os
import subprocess
import tempfile
import time

from harness import Server, cpu_seconds, pin, rss_kib, tree_pids

# A worker takes at most this many connections: room under the 20,000-file
# limit for the listener, the loop's own descriptors and stdio.
PER_WORKER = 19000
# Connections one load process opens (its own file limit is 20,000 too).
PER_LOAD = 16500
# 16 x 28,232 ports: room for 100,000 connections and the previous run's
# sockets still in TIME_WAIT.
SOURCE_ADDRESSES = 16
MESSAGE_BYTES = 32
# One message per connection per second, but at most this many in total:
# past it the load generator, on its one core, cannot keep its schedule
# (measured: at 100,000 msg/s nearly every send was late). So 100,000
# connections send one message every ~1.5 s.
TOTAL_RATE_CAP = 65000


def rss_total_kib(pids):
    return sum(rss_kib(pid) or 0 for pid in pids)


def established_on(port):
    """Server-side established sockets on the port, as the kernel sees them."""
    try:
        p = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                           capture_output=True, text=True, timeout=60)
        return sum(1 for line in p.stdout.splitlines() if line.strip())
    except (OSError, subprocess.TimeoutExpired):
        return None


def read_ready(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def one_target(name, path, load_bin, target, hold, log):
    """Opens `target` connections to one server, holds them, returns figures."""
    workers = max(1, math.ceil(target / (PER_WORKER * 0.9)))
    loads = max(1, math.ceil(target / PER_LOAD))
    srv = Server(path, ["--framing", "length_prefix", "--processes", str(workers),
                        "--max-connections", str(PER_WORKER)], core=0)
    per_conn = min(1.0, TOTAL_RATE_CAP / target)
    figures = {"server": name, "target": target, "hold_s": hold, "server_processes": workers,
               "load_processes": loads, "source_addresses": SOURCE_ADDRESSES,
               "message_bytes": MESSAGE_BYTES, "rate_per_connection": round(per_conn, 3)}
    problems = []
    procs = []
    ready_files = []
    try:
        if not srv.wait_listening(timeout=60):
            return None, [f"{name} did not start"]
        port = srv.port
        time.sleep(0.5)
        pids = tree_pids(srv.proc.pid)
        rss_before = rss_total_kib(pids)

        # The load: each process its share, all started together.
        shares = [target // loads + (1 if i < target % loads else 0) for i in range(loads)]
        launched = time.monotonic()
        for share in shares:
            ready = tempfile.NamedTemporaryFile(prefix="scale-ready-", delete=False)
            ready.close()
            ready_files.append(ready.name)
            lcmd = pin(1) + [load_bin, "--host", "127.0.0.1", "--port", str(port),
                             "--framing", "length_prefix", "--mode", "echo",
                             "--connections", str(share), "--size", str(MESSAGE_BYTES),
                             "--rate", str(round(share * per_conn, 1)), "--inflight", "4",
                             "--duration", str(hold), "--warmup", "0",
                             "--source-addresses", str(SOURCE_ADDRESSES),
                             "--burst-inflight", "256", "--connect-timeout", "240",
                             "--stall-timeout", "10", "--ready-file", ready.name]
            procs.append(subprocess.Popen(lcmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        # Time to all established: until every load process has settled
        # its connects (established or failed).
        all_ready = None
        deadline = launched + 300
        last_note = 0.0
        while time.monotonic() < deadline:
            states = [read_ready(r) for r in ready_files]
            if all(s.startswith("ready") or s.startswith("done") for s in states):
                all_ready = time.monotonic()
                break
            if any(p.poll() is not None for p in procs):
                break
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log(f"scale: {name} {target}: connecting, {sum(s != '' for s in states)}"
                    f"/{loads} load processes ready after {last_note - launched:.0f} s")
            time.sleep(0.1)
        if all_ready is None:
            problems.append("the load processes did not all settle their connects")
        else:
            figures["time_to_all_established_s"] = round(all_ready - launched, 2)
            # The hold: measure its middle, away from start and end.
            time.sleep(min(3.0, hold / 10))
            pids = tree_pids(srv.proc.pid)
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            time.sleep(max(1.0, hold / 2 - 3.0))
            figures["established_seen_by_server_kernel"] = established_on(port)
            rss_held = rss_total_kib(pids)
            time.sleep(max(1.0, hold / 2 - 8.0))
            cpu1, t1 = cpu_seconds(pids), time.monotonic()
            figures["server_cpu_percent"] = round(100.0 * (cpu1 - cpu0) / (t1 - t0), 1)
            figures["server_rss_before_kib"] = rss_before
            figures["server_rss_total_kib"] = rss_held
            log(f"scale: {name} {target}: all settled after "
                f"{figures['time_to_all_established_s']} s; server RSS {rss_held / 1024:.0f} MiB, "
                f"{figures['server_cpu_percent']}% CPU, holding")
        results = []
        for p in procs:
            try:
                o, e = p.communicate(timeout=hold + 420)
            except subprocess.TimeoutExpired:
                p.kill()
                o, e = p.communicate()
                problems.append("a load process did not finish")
            try:
                results.append(json.loads(o.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                problems.append(f"a load process printed no result: {e[-300:]}")
        if results:
            reached = sum(r.get("connected", 0) for r in results)
            figures["reached"] = reached
            for k in ("connect_failures", "corrupted_bytes", "errors", "stalled_connections",
                      "messages", "late_sends", "skipped_sends"):
                figures[k] = sum(r.get(k, 0) for r in results)
            lat = [r.get("latency_us", {}) for r in results]
            # Each load process has its own histogram: the worst of their
            # p99s bounds the p99 of all messages from above.
            figures["p50_us"] = max((x.get("p50", 0) for x in lat), default=None)
            figures["p99_us"] = max((x.get("p99", 0) for x in lat), default=None)
            figures["p999_us"] = max((x.get("p999", 0) for x in lat), default=None)
            figures["max_us"] = max((x.get("max", 0) for x in lat), default=None)
            figures["connect_seconds_max"] = max(r.get("connect_seconds", 0) for r in results)
            if reached and "server_rss_total_kib" in figures:
                figures["server_rss_per_conn_bytes"] = round(
                    (figures["server_rss_total_kib"] - rss_before) * 1024 / reached, 1)
            if figures["corrupted_bytes"] or figures["errors"]:
                problems.append(f"corrupted bytes {figures['corrupted_bytes']}, "
                                f"errors {figures['errors']}")
            if reached < target or figures["connect_failures"]:
                problems.append(f"reached {reached} of {target} "
                                f"({figures['connect_failures']} connect failures)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if not srv.stop(timeout=120):
            problems.append("the server did not stop within 120 s of SIGINT")
        for r in ready_files:
            try:
                os.unlink(r)
            except OSError:
                pass
    if srv.final:
        eng = srv.final.get("engine", {})
        figures["server_accepted"] = eng.get("accepted")
        figures["server_rejected"] = eng.get("rejected")
        figures["server_accept_failures"] = eng.get("accept_failures")
        figures["server_allocations_after_start"] = eng.get("allocations_after_start")
    if srv.proc.returncode not in (0, None):
        problems.append(f"{name} exited with {srv.proc.returncode}")
    return figures, problems


def markdown(rows):
    lines = ["## concurrent connections (scale)",
             "_Server: ionet-echo --processes P (SO_REUSEPORT), pinned to core 0; load: "
             "ionet-load processes on core 1, 16 source addresses; each connection sends "
             f"{MESSAGE_BYTES} B once a second (at most {TOTAL_RATE_CAP:,} msg/s in all), "
             "every echo checked; latency counts from each message's intended send time, "
             "so the load's own late sends show in it. RSS: all server "
             "processes, during the hold; per connection = (held - before) / reached._", "",
             "| server | target | reached | failures | established (ss) | time to all (s) "
             "| RSS total (MiB) | RSS/conn (B) | CPU % | p50 (µs) | p99 (µs) | late sends "
             "| corrupted |",
             "|---" * 13 + "|"]
    for f in rows:
        def g(k, scale=1.0, nd=0):
            v = f.get(k)
            if v is None:
                return "-"
            return f"{v / scale:,.{nd}f}"
        lines.append(
            f"| {f['server']} | {f['target']:,} | {g('reached')} | {g('connect_failures')} "
            f"| {g('established_seen_by_server_kernel')} | {g('time_to_all_established_s', nd=1)} "
            f"| {g('server_rss_total_kib', 1024, 1)} | {g('server_rss_per_conn_bytes')} "
            f"| {g('server_cpu_percent', nd=1)} | {g('p50_us')} | {g('p99_us')} "
            f"| {g('late_sends')} | {g('corrupted_bytes')} |")
        if f.get("server_said"):
            lines.append(f"\n- {f['server']} said: " + " / ".join(f["server_said"]))
        if f.get("problems"):
            for p in f["problems"]:
                lines.append(f"\n- problem ({f['server']}, {f['target']:,}): {p}")
    return "\n".join(lines) + "\n"


def run(servers, bins, targets, hold, log):
    """Every server at every target; returns the rows."""
    rows = []
    for name in servers:
        for target in targets:
            log(f"scale: {name}: {target:,} connections, held {hold:.0f} s")
            figures, problems = one_target(name, bins[name], bins["ionet-load"], target,
                                           hold, log)
            row = figures or {"server": name, "target": target}
            row["problems"] = problems
            rows.append(row)
            log(f"scale: {name} {target:,}: reached {row.get('reached')}, "
                f"failures {row.get('connect_failures')}, p99 {row.get('p99_us')} µs"
                + (f"; PROBLEMS: {'; '.join(problems)}" if problems else ""))
            time.sleep(3)  # let the kernel retire the sockets in TIME_WAIT
    return rows


def wineserver_fds():
    """Open descriptors of the (first) wineserver, or None."""
    try:
        p = subprocess.run(["pgrep", "-f", "/wine/wineserver"], capture_output=True, text=True)
        pid = p.stdout.split()[0]
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, IndexError):
        return None


def wine_ceiling(bins, target, hold, log):
    """The IOCP backend under Wine: how many connections one process holds.

    Wine keeps every socket of a prefix in its one wineserver process
    (~19,700 sockets before it runs out of descriptors), so one server
    process is the whole story. Native ionet-load processes (idle mode:
    connect, hold silent, then one checked echo on each) find the ceiling.
    Behaviour only: Wine's speed says nothing about Windows.
    """
    name = "ionet-iocp-wine"
    srv = Server(bins[name], ["--framing", "length_prefix",
                              "--max-connections", str(target + 1000)], core=0, wine=True)
    figures = {"server": name, "target": target, "hold_s": hold, "server_processes": 1}
    problems = []
    if not srv.wait_listening(timeout=120):
        srv.stop()
        return figures, ["ionet-echo.exe did not start under Wine"]
    loads = max(1, math.ceil(target / 10000))
    figures["load_processes"] = loads
    shares = [target // loads + (1 if i < target % loads else 0) for i in range(loads)]
    procs = []
    started = time.monotonic()
    for share in shares:
        procs.append(subprocess.Popen(
            [bins["ionet-load"], "--host", "127.0.0.1", "--port", str(srv.port),
             "--framing", "length_prefix", "--mode", "idle", "--connections", str(share),
             "--size", str(MESSAGE_BYTES), "--hold", str(hold), "--burst-inflight", "128",
             "--connect-timeout", "240", "--stall-timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # The wineserver holds a descriptor per socket of every Wine process:
    # its count, sampled while the load runs, is the ceiling's cause.
    fds_max = 0
    while any(p.poll() is None for p in procs) and time.monotonic() - started < hold + 420:
        fds_max = max(fds_max, wineserver_fds() or 0)
        time.sleep(1)
    figures["wineserver_fds_max"] = fds_max
    results = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
            problems.append("a load process did not finish")
        try:
            results.append(json.loads(o.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            problems.append(f"a load process printed no result: {e[-300:]}")
    figures["run_s"] = round(time.monotonic() - started, 1)
    stopping = time.monotonic()
    # Closing 20,000 sockets under Wine takes seconds, not minutes: a
    # server that has not stopped after 120 s never will.
    srv.stop(timeout=120)
    rc = srv.proc.returncode
    figures["stop_s"] = round(time.monotonic() - stopping, 1)
    if rc != 0:
        why = ""
        if fds_max >= 19990:
            why = (" (the wineserver held its 20,000 descriptors: Wine could not start "
                   "the thread that delivers Ctrl-C, so SIGINT never reached the server)")
        problems.append(f"ionet-echo.exe did not stop on SIGINT, killed: exit {rc}{why}")
    for k in ("connected", "connect_failures", "corrupted_bytes", "errors", "echoed",
              "stalled_connections", "open_after_hold"):
        figures[k] = sum(r.get(k, 0) for r in results)
    figures["reached"] = figures.pop("connected")
    figures["connect_seconds_max"] = max((r.get("connect_seconds", 0) for r in results),
                                         default=None)
    eng = (srv.final or {}).get("engine", {})
    for k in ("accepted", "rejected", "accept_failures", "accept_pool_growths",
              "sockets_created", "allocations_after_start"):
        figures[f"server_{k}"] = eng.get(k)
    # What the server said about its failures (Wine's errors come as text).
    said = srv.output_tail(3000).splitlines()
    figures["server_said"] = [line for line in said if line.strip()][-5:]
    if figures["reached"] < target:
        problems.append(f"reached {figures['reached']} of {target}; the server counted "
                        f"{figures['server_accept_failures']} accept failures")
    if figures["corrupted_bytes"] or figures["errors"]:
        problems.append(f"corrupted bytes {figures['corrupted_bytes']}, errors {figures['errors']}")
    log(f"scale: {name} {target:,}: reached {figures['reached']}, "
        f"{figures['connect_failures']} connect failures, {figures['echoed']} echoed")
    return figures, problems
