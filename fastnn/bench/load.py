"""A loaded machine on demand: another process that keeps one CPU busy while the
under-load case runs, and is always stopped afterwards."""
import contextlib
import os
import subprocess
import sys

# Spins, and checks now and then whether the process that started it (its first
# argument) is still its parent, so that not even a benchmark killed outright leaves
# it running.
_SPIN = ("import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n"
         "    for _ in range(1000000):\n        pass\n")


def usable_cpus():
    """The CPUs this process may run on, sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS, Windows): all of them
        return list(range(os.cpu_count() or 1))


@contextlib.contextmanager
def busy_cpu(cpu=None, popen=subprocess.Popen):
    """Keep one CPU busy for the ``with`` block: a Python process spinning, pinned to
    ``cpu`` (default: the last usable one) where the system allows pinning. Yields
    {"pid", "cpu", "pinned"}; the process is killed when the block ends, whatever
    ends it (an exception, Ctrl-C)."""
    cpu = usable_cpus()[-1] if cpu is None else cpu
    process = popen([sys.executable, "-S", "-c", _SPIN, str(os.getpid())], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pinned = False
        if hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(process.pid, {cpu})
                pinned = True
            except OSError:  # not allowed here: it still keeps some CPU busy
                pass
        yield {"pid": process.pid, "cpu": cpu, "pinned": pinned}
    finally:
        process.kill()
        process.wait()
