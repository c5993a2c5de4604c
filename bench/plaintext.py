"""The http scenario of ci/bench: wrk against HTTP "Hello, World!" servers.

The TechEmpower plaintext shape: keep-alive HTTP/1.1, every request
answered with 13 bytes of text/plain. The servers are
ionet-example-http_plaintext on each ionet backend (one engine thread) and
nginx (nginx-light) configured for the same job: one worker process, no
access log, `return 200 "Hello, World!"`, keep-alive without a request
limit, the listen backlog ionet uses (4096). Every server is pinned to
core 0 and wrk (one thread) to core 1, as the echo scenarios pin server
and load.

One run: the server starts, a warm-up wrk (its figures dropped), then the
measured wrk; the server's CPU (utime + stime of its processes, from /proc)
is read just before and just after the measured wrk, so CPU per request
counts its connects too, for every server alike. A run whose wrk saw socket
errors (connect, read, write, timeout) or a status that is not 2xx or 3xx
(wrk counts them together) is reported as a problem and its speed figures
are kept out of the medians.
"""
import os
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import time

from harness import cpu_seconds, interrupt, pin, tree_pids

SERVER_CORE = 0
WRK_CORE = 1
WRK_THREADS = 1
# wrk's own time-out for a request; a request that takes longer is a
# "timeout" socket error.
WRK_TIMEOUT_S = 2
# The ionet rows and the nginx row take the same listen backlog.
BACKLOG = 4096

# The figures of one run that depend on its speed: left out when the run
# saw errors.
SPEED = ("requests_per_sec", "server_cpu_us_per_req", "p50_us", "p99_us")


def wrk_seconds(seconds):
    """wrk's -d takes whole seconds: the nearest, at least 1."""
    return max(1, int(round(seconds)))


def wrk_args(connections, seconds):
    """wrk and its flags, less the URL."""
    return ["wrk", "--threads", str(WRK_THREADS), "--connections", str(connections),
            "--duration", f"{wrk_seconds(seconds)}s", "--timeout", f"{WRK_TIMEOUT_S}s",
            "--latency"]


def wrk_command(port, connections, seconds):
    return pin(WRK_CORE) + wrk_args(connections, seconds) + [f"http://127.0.0.1:{port}/"]


# --- wrk's output --------------------------------------------------------------

_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_TIME = _NUMBER + r"(us|ms|s|m|h)"


def parse_wrk(text):
    """wrk 4's report: a dict of figures, or None when it has no
    "N requests in T" or "Requests/sec:" line. Socket errors and bad
    statuses are 0 when wrk says nothing of them (it prints those lines only
    when they are not)."""
    done = re.search(r"^\s*([0-9]+) requests in " + _TIME, text, re.M)
    rate = re.search(r"^Requests/sec:\s*" + _NUMBER, text, re.M)
    if not done or not rate:
        return None
    out = {"requests": int(done.group(1)),
           "wrk_seconds": round(float(done.group(2)) * _US[done.group(3)] / 1e6, 3),
           "requests_per_sec": float(rate.group(1)),
           "connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0,
           "non_2xx": 0}
    errs = re.search(r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), "
                     r"timeout ([0-9]+)", text)
    if errs:
        for key, value in zip(("connect_errors", "read_errors", "write_errors", "timeouts"),
                              errs.groups()):
            out[key] = int(value)
    bad = re.search(r"Non-2xx or 3xx responses:\s*([0-9]+)", text)
    if bad:
        out["non_2xx"] = int(bad.group(1))
    out["socket_errors"] = sum(out[k] for k in ("connect_errors", "read_errors",
                                                "write_errors", "timeouts"))
    # --latency: the distribution, one "NN% TIME" line per percentile.
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(r"^\s*" + pct + r"(?:\.0+)?%\s+" + _TIME + r"\s*$", text, re.M)
        if m:
            out[key] = round(float(m.group(1)) * _US[m.group(2)], 1)
    return out


def wrk_problem(fig):
    """What is wrong with a parsed wrk run, or None."""
    said = []
    if fig["socket_errors"]:
        said.append(f"{fig['socket_errors']} socket errors (connect {fig['connect_errors']}, "
                    f"read {fig['read_errors']}, write {fig['write_errors']}, "
                    f"timeout {fig['timeouts']})")
    if fig["non_2xx"]:
        said.append(f"{fig['non_2xx']} responses neither 2xx nor 3xx")
    if fig["requests"] == 0:
        said.append("no request answered")
    return "; ".join(said) or None


def children_cpu():
    """CPU seconds of the children waited for so far (taskset execs wrk, so
    around a wrk run: wrk's own)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_wrk(port, connections, seconds):
    """One wrk run: (parsed figures or None, what went wrong or None). The
    figures add wrk_cpu_s: the CPU wrk used (it runs on its one core, so
    near its wall time means the client, not the server, set the pace)."""
    cmd = wrk_command(port, connections, seconds)
    cpu0 = children_cpu()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=wrk_seconds(seconds) + 60)
    except subprocess.TimeoutExpired:
        return None, "wrk did not finish"
    except OSError as e:
        return None, f"wrk did not run: {e}"
    fig = parse_wrk(p.stdout)
    if p.returncode != 0 or fig is None:
        said = (p.stderr.strip() or p.stdout.strip()).replace("\n", " ")
        return None, f"wrk exited with {p.returncode}: {said[-200:]}"
    fig["wrk_cpu_s"] = round(children_cpu() - cpu0, 3)
    return fig, None


# --- nginx ---------------------------------------------------------------------

NGINX_CONF = """\
# ci/bench's nginx: the plaintext job on one worker, everything it writes
# under {dir}.
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
lock_file {dir}/nginx.lock;
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # Keep-alive as long as the client wants (the default closes a
    # connection after 1000 requests).
    keepalive_requests 1000000000;
    server {{
        listen 127.0.0.1:{port} backlog={backlog};
        location / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
"""


def free_port():
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def nginx_path():
    return shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    """nginx in the foreground (its master and one worker) on 127.0.0.1, on a
    port free when it started; its configuration, pid file and temp
    directories in a directory of its own, so /etc/nginx and /var are
    neither read nor written. What harness.Server offers that the http
    runs use: proc, port, wait_listening(), stop(), output_tail()."""

    def __init__(self, path, core=SERVER_CORE):
        self.path = path
        self.core = core
        self.dir = tempfile.mkdtemp(prefix="bench-nginx-")
        self.err = tempfile.TemporaryFile(prefix="bench-nginx-", suffix=".err")
        self.proc = None
        self.port = None
        self.tries = 0

    def _start(self):
        self.tries += 1
        self.port = free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=self.dir, port=self.port, backlog=BACKLOG))
        # -e: the error log before the configuration is read (stderr).
        cmd = pin(self.core) + [self.path, "-p", self.dir + "/", "-c", conf, "-e", "stderr"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err)

    def wait_listening(self, timeout=20):
        """(host, port) once it accepts a connection; None if it exits (three
        tries: the free port may be taken before nginx binds it) or does not
        accept within timeout seconds."""
        deadline = time.monotonic() + timeout
        if self.proc is None:
            self._start()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.tries >= 3:
                    return None
                self._start()
                continue
            if accepts(self.port):
                # The master listens; its worker, forked next, answers.
                # Given a moment to show (a kernel without the children
                # file never shows it).
                until = min(deadline, time.monotonic() + 1.0)
                while len(tree_pids(self.proc.pid)) < 2 and time.monotonic() < until:
                    time.sleep(0.02)
                return ("127.0.0.1", self.port)
            time.sleep(0.02)
        return None

    def output_tail(self, n=300):
        self.err.seek(0)
        return self.err.read().decode(errors="replace").strip()[-n:]

    def stop(self, timeout=20):
        """SIGINT (nginx's fast shutdown), SIGKILL after timeout seconds; then
        its directory goes. True when it ended on the SIGINT."""
        clean = True if self.proc is None else interrupt(self.proc, timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
        return clean


# --- one run -------------------------------------------------------------------

def measure(srv, connections, seconds, warmup):
    """Drives a listening server: a warm-up wrk (when warmup > 0), then the
    measured one with the server's CPU read around it. (figures, problems
    or None): the figures of a measured run with errors have no SPEED
    figures (they are under "unclean" instead); errors in the warm-up are
    reported, but leave the measured run's figures be."""
    problems = []
    if warmup > 0:
        fig, err = run_wrk(srv.port, connections, warmup)
        if fig is None:
            return {}, f"warm-up: {err}"
        if wrk_problem(fig):
            problems.append(f"http errors in the warm-up: {wrk_problem(fig)}")
    pids = tree_pids(srv.proc.pid)  # nginx: its master and worker
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    fig, err = run_wrk(srv.port, connections, seconds)
    cpu1, t1 = cpu_seconds(pids), time.monotonic()
    if fig is None:
        return {}, "; ".join(problems + [err])
    fig["server_cpu_s"] = round(cpu1 - cpu0, 3)
    if fig["requests"]:
        fig["server_cpu_us_per_req"] = round((cpu1 - cpu0) * 1e6 / fig["requests"], 3)
    # Shares of a core over the run: on a quiet machine one of the two is
    # near 100 (what set the pace); both well below it: the cores were busy
    # with something else.
    fig["server_cpu_pct"] = round((cpu1 - cpu0) * 100 / (t1 - t0), 1)
    fig["wrk_cpu_pct"] = round(fig["wrk_cpu_s"] * 100 / (t1 - t0), 1)
    problem = wrk_problem(fig)
    if problem:
        fig["unclean"] = {k: fig.pop(k) for k in SPEED if k in fig}
        problems.append(f"http errors: {problem}; speed figures left out")
    return fig, "; ".join(problems) or None
