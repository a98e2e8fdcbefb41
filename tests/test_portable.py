"""The C kernels checked from C, natively on every CPU tier and cross-built for ARM64.

tests/c/fn_check.c compares every entry point of fastnn/_kernels/fn_kernels.h (the
dispatchers fn_dispatch.h lists, and those of the training ops: dense, loss, norm,
optim, dropout, embedding) with naive loops in double, on every tier this CPU
runs (AVX-512, AVX2, generic) in float and double: full and partial tiles and
panels, K = 0 and M = 0, both thread counts, and that nothing is written outside
the outputs. Here it is built with the host's C compiler and run; built with
Debian's aarch64 cross compiler (gcc-aarch64-linux-gnu) when that is installed, and
run under qemu-aarch64 (user mode, with the cross sysroot) when that is too, so the
generic tier's 16-byte vectors are checked as NEON code.

The kernel headers are not installed with the package: they are found beside this
file, in <checkout>/fastnn/_kernels; the tests skip where they are absent or where
no C compiler is. Nothing here depends on timing.
"""
import os
import re
import shlex
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(os.path.dirname(HERE), "fastnn", "_kernels")
SOURCE = os.path.join(HERE, "c", "fn_check.c")
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"

SUMMARY = re.compile(r"^fn_check: (\d+) checks, (\d+) failed$", re.M)
TALLY = re.compile(r"^  (\w+) +(\d+) checks, (\d+) failed", re.M)


def _need_sources():
    if not os.path.isfile(os.path.join(KERNELS, "fn_kernels.h")):
        pytest.skip(f"no kernel headers at {KERNELS} (not a source checkout)")
    # beside this file in every checkout: a missing one is an error, not a skip
    # (the repository's .gitignore ignores *.c; tests/c/.gitignore lets it in)
    assert os.path.isfile(SOURCE), f"{SOURCE} is missing"


def _host_cc():
    """The host's C compiler as a command (CC, else cc, gcc or clang), or None."""
    if os.environ.get("CC"):
        cc = shlex.split(os.environ["CC"])
        if cc and shutil.which(cc[0]):
            return cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def _accepts_openmp(cc, workdir):
    """Whether cc compiles and links an OpenMP program (as setup.py asks)."""
    src = os.path.join(workdir, "omp_probe.c")
    with open(src, "w") as f:
        f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
    try:
        probe = subprocess.run(cc + ["-fopenmp", src, "-o", os.path.join(workdir, "omp_probe")],
                               capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


class _Build:
    """fn_check being built by cc at -O2 (with OpenMP when cc takes it) into workdir,
    in the background: the native and the ARM64 build run side by side."""

    def __init__(self, cc, workdir, name):
        self.out = os.path.join(workdir, name)
        # as setup.py builds the kernels: multiply-adds fused only where they say so, and
        # -fwrapv, which every extension module gets from Python's CFLAGS (without it
        # GCC 12 at -O2 stops with an internal error in fn_dense.h's generic double
        # activation once a caller passes the kind at run time)
        flags = ["-O2", "-fwrapv", "-ffp-contract=off"] + (["-fopenmp"] if _accepts_openmp(cc, workdir) else [])
        self.cmd = cc + flags + ["-I", KERNELS, SOURCE, "-o", self.out, "-lm"]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def binary(self):
        try:
            log, _ = self.proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{shlex.join(self.cmd)} took over 600 s")
        assert self.proc.returncode == 0, f"{shlex.join(self.cmd)} failed:\n{log[-6000:]}"
        return self.out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The builds this machine can make, started together: "native" and "arm64"."""
    _need_sources()
    started = {}
    try:
        cc = _host_cc()
        if cc is not None:
            started["native"] = _Build(cc, str(tmp_path_factory.mktemp("fn_check")), "fn_check")
        if shutil.which(CROSS_CC) is not None:
            started["arm64"] = _Build([CROSS_CC], str(tmp_path_factory.mktemp("fn_check_arm64")),
                                      "fn_check_arm64")
        yield started
    finally:
        for build in started.values():
            build.stop()


def _run(cmd):
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return run.returncode, run.stdout + run.stderr


def _report(out):
    """The failure lines (the first 40) and the summary, for an assertion message."""
    lines = out.splitlines()
    fails = [line for line in lines if line.startswith("FAIL")]
    rest = [line for line in lines if not line.startswith("FAIL")]
    return "\n".join(fails[:40] + (["..."] if len(fails) > 40 else []) + rest[-40:])


# the dispatch headers whose entry points fn_check.c checks (fn_pool_dispatch.h's are
# not checked from C yet: the pooling tests reach them through cython only)
DISPATCH = ["fn_dispatch.h", "fn_dense_dispatch.h", "fn_loss_dispatch.h", "fn_norm_dispatch.h",
            "fn_optim_dispatch.h", "fn_dropout_dispatch.h", "fn_embedding_dispatch.h"]


def _entry_points():
    """The kernels those dispatchers run (FN_PICK's name): fn_<name>_f / fn_<name>_d,
    and fn_drop_mask."""
    names = set()
    for header in DISPATCH:
        with open(os.path.join(KERNELS, header)) as f:
            names.update(re.findall(r"\bFN_PICK\(\s*\w*\s*,\s*(\w+)\s*,", f.read()))
    return sorted(names)


@pytest.fixture(scope="module")
def native(builds):
    """fn_check built for this machine, and the output of its normal run."""
    if "native" not in builds:
        pytest.skip("no C compiler (cc, gcc, clang or $CC) on PATH")
    binary = builds["native"].binary()
    rc, out = _run([binary])
    return binary, rc, out


def test_c_kernels_on_every_tier(native):
    _, rc, out = native
    assert rc == 0, "fn_check found kernel results off their naive reference:\n" + _report(out)
    checks, failed = map(int, SUMMARY.search(out).groups())
    assert failed == 0 and checks > 10000, _report(out)


def test_c_check_covers_every_entry_point(native):
    """Each dispatcher of fn_dispatch.h is called and compared: a new entry point
    needs its check in tests/c/fn_check.c."""
    _, _, out = native
    checked = {name: int(n) for name, n, _ in TALLY.findall(out)}
    entry_points = _entry_points()
    assert len(entry_points) >= 20, entry_points
    missing = [name for name in entry_points if checked.get(name, 0) == 0]
    assert not missing, f"entry points fn_check.c does not check: {missing}"


def test_c_check_catches_wrong_results(native):
    """--selftest shifts what every check sees of a kernel's output by a little
    (1e-2 relative in float, 1e-7 in double; a size by one; one element of the
    memory a call must leave alone): every check must then fail, so none passes
    vacuously and every tolerance is tighter than that."""
    binary, _, normal = native
    rc, out = _run([binary, "--selftest"])
    assert rc == 1, _report(out)
    checks, failed = map(int, SUMMARY.search(out).groups())
    assert checks == int(SUMMARY.search(normal).group(1))
    assert failed == checks, _report(out)
    assert out.count("\nFAIL ") + out.startswith("FAIL ") == failed
    for name, n, bad in TALLY.findall(out):
        assert int(bad) == int(n) > 0, name


@pytest.fixture(scope="module")
def arm64(builds):
    """fn_check cross-built for aarch64 (-O2, OpenMP when the cross compiler takes it)."""
    if "arm64" not in builds:
        pytest.skip(f"no ARM64 cross compiler: {CROSS_CC} is not on PATH "
                    "(Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu)")
    return builds["arm64"].binary()


def test_c_kernels_build_for_arm64(arm64):
    with open(arm64, "rb") as f:
        header = f.read(20)
    # an ELF executable for machine 183 (EM_AARCH64), little-endian
    assert header[:4] == b"\x7fELF" and header[18:20] == (183).to_bytes(2, "little")


def test_c_kernels_on_arm64_under_qemu(arm64):
    if shutil.which(QEMU) is None:
        pytest.skip(f"built for ARM64, not run: {QEMU} is not on PATH "
                    "(Debian/Ubuntu: apt-get install qemu-user)")
    if not os.path.isdir(os.path.join(SYSROOT, "lib")):
        pytest.skip(f"built for ARM64, not run: no aarch64 sysroot at {SYSROOT} "
                    "(Debian/Ubuntu: apt-get install libc6-arm64-cross)")
    rc, out = _run([QEMU, "-L", SYSROOT, arm64])
    assert rc == 0, "fn_check failed on ARM64 (qemu):\n" + _report(out)
    assert "fn_check: cpu tier generic," in out, out[-2000:]
    checks, failed = map(int, SUMMARY.search(out).groups())
    assert failed == 0 and checks > 10000, _report(out)
