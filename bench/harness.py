"""What ci/bench (compare.py, scale.py) and ci/soak (soak.py) share: where
the binaries are, CPU pinning, what /proc says of a process, and the one way
a server is started, waited for and stopped."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The build preset of each ionet backend on Linux.
PRESETS = {"libuv": "linux-release", "uring": "linux-uring-release"}


def binary(preset, rel):
    """A built binary: build/<preset>/<rel> under the checkout."""
    return os.path.join(ROOT, "build", preset, rel)


def pin(core):
    """The taskset prefix that keeps a process on one core (none on one
    core, without taskset, or for core None)."""
    if core is not None and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


# --- /proc --------------------------------------------------------------------

def rss_kib(pid):
    """Resident set size in KiB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pids):
    """CPU seconds (utime + stime, every thread) the processes have used so
    far; a process that is gone counts 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                # After the ")" that ends the command name: field 3 first.
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def tree_pids(pid):
    """pid and its children (ionet-echo --processes: the workers)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return pids


def rss_tree_kib(pid):
    """RSS of pid and its children in KiB, or None when pid is gone."""
    if rss_kib(pid) is None:
        return None
    return sum(rss_kib(p) or 0 for p in tree_pids(pid))


def interrupt(proc, timeout):
    """SIGINT (the servers' clean stop), then SIGKILL after timeout seconds.
    True when the process ended on the SIGINT (or had ended already)."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


# --- the server ---------------------------------------------------------------

WINE = "/usr/lib/wine/wine64"


class Server:
    """A server (ionet-echo or a peer) on 127.0.0.1 and a free port.

    Its output goes to files, never a pipe: Wine's services, started by a
    Windows server, would hold a pipe open for as long as they live. A
    thread reads stdout as it grows: the `listening on HOST:PORT` line, the
    JSON stats lines (ionet-echo prints one at exit, and one every
    --stats-interval) and anything else, kept in `said`.
    """

    def __init__(self, path, args=(), core=None, wrap=(), wine=False):
        cmd = [path, "--host", "127.0.0.1", "--port", "0"] + list(args)
        env = None
        if wine:
            env = dict(os.environ)
            prefix = env.get("IONET_WINEPREFIX", os.path.join(ROOT, "build", "wine-prefix"))
            # Makes the prefix (once) and its persistent wineserver.
            subprocess.run([os.path.join(ROOT, "ci", "wine-run"), "cmd", "/c", "exit", "0"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            env.update(WINEPREFIX=prefix, WINEDEBUG="-all")
            cmd = [WINE] + cmd
        else:
            cmd = list(wrap) + cmd
        self.out = tempfile.TemporaryFile(prefix="bench-server-", suffix=".out")
        self.err = tempfile.TemporaryFile(prefix="bench-server-", suffix=".err")
        self.proc = subprocess.Popen(pin(core) + cmd, stdout=self.out, stderr=self.err, env=env)
        self.host = None
        self.port = None
        self.said = []  # stdout lines other than `listening on` and stats
        self.final = None  # after stop(): the stats line printed as it stopped
        self.lock = threading.Lock()
        self.latest = None  # (monotonic time read, stats object)
        self.lines = 0  # stats lines so far
        self.ended = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        offset, partial = 0, b""
        while True:
            ended = self.ended.is_set()  # then one more read takes the rest
            data = os.pread(self.out.fileno(), 1 << 16, offset)
            while data:
                offset += len(data)
                partial += data
                data = os.pread(self.out.fileno(), 1 << 16, offset)
            *lines, partial = partial.split(b"\n")
            if ended:
                lines.append(partial)
            for line in lines:
                self._line(line.decode(errors="replace").strip())
            if ended:
                return
            # Quick while starting up; a stats line is seldom wanted sooner.
            self.ended.wait(0.02 if self.port is None else 0.2)

    def _line(self, line):
        if line.startswith("listening on "):
            host, _, port = line[len("listening on "):].rpartition(":")
            self.host, self.port = host, int(port)
            return
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                with self.lock:
                    self.latest = (time.monotonic(), obj)
                    self.lines += 1
                return
            except ValueError:
                pass
        if line:
            with self.lock:
                self.said.append(line[:300])

    def wait_listening(self, timeout=20):
        """(host, port) once it says `listening on`; None if it exits or
        says nothing within timeout seconds."""
        deadline = time.monotonic() + timeout
        while self.port is None and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.1)  # the reader's last look
                break
            time.sleep(0.02)
        return None if self.port is None else (self.host, self.port)

    def stats(self):
        """(age in seconds, stats object) of the latest line, or (None, None)."""
        with self.lock:
            if self.latest is None:
                return None, None
            t, obj = self.latest
            return time.monotonic() - t, obj

    def fresh_stats(self, timeout=5.0):
        """The first stats line printed after this call, or None."""
        with self.lock:
            seen = self.lines
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.lines > seen:
                    return self.latest[1]
            if self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def stderr_tail(self, n=600):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")[-n:]

    def output_tail(self, n=300):
        """The end of what it said, stdout (less its stats) then stderr."""
        with self.lock:
            said = "\n".join(self.said)
        return (said + "\n" + self.stderr_tail(n)).strip()[-n:]

    def stop(self, timeout=20):
        """SIGINT, then SIGKILL after timeout seconds; True when it ended on
        the SIGINT. Then proc.returncode is its exit status and `final`
        the stats line it printed once stopped (None if none)."""
        with self.lock:
            seen = self.lines
        clean = interrupt(self.proc, timeout)
        self.ended.set()
        self.reader.join(timeout=5)
        with self.lock:
            self.final = self.latest[1] if self.lines > seen else None
        return clean
