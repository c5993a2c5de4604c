"""Processes of ci/bench and ci/soak: what /proc says of them, how they stop."""
import signal
import subprocess


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
