"""Commands, logging and the ways a run ends.

Every command runs in its own process group (``start_new_session``), and
the group is killed whatever ends the wait: its timeout, an exception, or a
signal turned into one (:func:`install_signal_handlers`).  So a run that
is interrupted or times out leaves no debootstrap, mkfs or qemu behind.
"""
import os
import signal
import subprocess
import sys
import time

T0 = time.monotonic()


def say(msg):
    print(f"[boot-test {int(time.monotonic() - T0):4d}s] {msg}", file=sys.stderr, flush=True)


def elapsed():
    return int(time.monotonic() - T0)


class HarnessError(Exception):
    """A step of the harness itself failed (not a check): the run cannot go on."""


class Ended(BaseException):
    """A signal or the overall watchdog ends the run (exit code, reason).

    A BaseException, so that ``except Exception`` in a step does not swallow it
    and every ``with``/``finally`` on the way out (qemu, process groups, the
    work dir) runs."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def install_signal_handlers(overall_timeout):
    """Turn signals into :class:`Ended`: the watchdog (SIGALRM after
    ``overall_timeout`` seconds) exits 124, SIGINT 130, SIGTERM 143."""

    def on(signum, _frame):
        if signum == signal.SIGALRM:
            raise Ended(124, f"overall timeout of {overall_timeout}s (BOOT_TIMEOUT)")
        if signum == signal.SIGINT:
            raise Ended(130, "interrupted")
        raise Ended(143, "terminated")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(s, on)
    signal.alarm(overall_timeout)


def kill_group(proc, grace=5.0):
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` s."""
    if proc.poll() is not None:
        # the leader is gone; its group may not be
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(cmd, *, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=None, check=False,
        cwd=None, env=None, input=None, what=None):
    """Run ``cmd`` (a list) to completion in its own process group.

    stdout/stderr: PIPE (captured, text), a path (written there), or a file.
    A timeout kills the group and gives returncode 124 with a note in stderr.
    ``check``: raise HarnessError naming ``what`` (default: the command) and
    its stderr when it fails.
    """
    files = []

    def target(x):
        if isinstance(x, (str, os.PathLike)):
            f = open(x, "w")
            files.append(f)
            return f
        return x

    out_t, err_t = target(stdout), (subprocess.STDOUT if stderr is subprocess.STDOUT else target(stderr))
    try:
        with subprocess.Popen([str(c) for c in cmd], stdout=out_t, stderr=err_t,
                              stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                              cwd=cwd, env=env, text=True, start_new_session=True) as p:
            try:
                out, err = p.communicate(input, timeout=timeout)
                rc = p.returncode
            except subprocess.TimeoutExpired:
                kill_group(p)
                out, err = p.communicate()
                rc = 124
                err = (err or "") + f"\n(killed after {timeout}s)"
            except BaseException:
                kill_group(p)
                raise
    finally:
        for f in files:
            f.close()
    res = subprocess.CompletedProcess(cmd, rc, out, err)
    if check and rc != 0:
        detail = (err or "").strip()[-2000:]
        raise HarnessError(f"{what or ' '.join(map(str, cmd[:3]))} failed (exit {rc})" + (f": {detail}" if detail else ""))
    return res


def tail(path, n):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").replace("\r", "").splitlines()
    except OSError as e:
        return f"({path}: {e.strerror})"
    return "\n".join(lines[-n:])
