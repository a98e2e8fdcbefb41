"""Fuzz every public function with Hypothesis, in a child process (tests/fuzz_driver.py).

Random shapes, parameters (zero, negative, float, string, None, astronomically large,
tuples of the wrong length, NumPy integers), dtypes (float16/32/64, longdouble, int,
bool, complex, object, str), odd memory layouts and backends (including bad names)
are thrown at every public function. Each call must return what the same call on the
reference backend returns, or raise ValueError/TypeError whose message starts with
the function's name; inputs must stay unmodified and outputs must be new arrays.
The driver runs in a subprocess so that a segfault or a hang fails this test with
the offending case instead of killing the pytest session.

The normal run uses a fixed seed and a bounded number of examples. For a longer
run, on demand:

    FASTNN_FUZZ_EXAMPLES=5000 FASTNN_FUZZ_SEED=123 python -m pytest tests/test_fuzz.py

or run the driver directly: ``python tests/fuzz_driver.py --examples 5000 --seed 123``.
"""
import os
import re
import subprocess
import sys

import pytest

import fastnn
from helpers import CONVERTERS, OPS

pytest.importorskip("hypothesis")

EXAMPLES = int(os.environ.get("FASTNN_FUZZ_EXAMPLES", "4000"))
SEED = int(os.environ.get("FASTNN_FUZZ_SEED", "0"))
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
PUBLIC = OPS + CONVERTERS


def test_fuzz_every_public_function(tmp_path):
    progress = tmp_path / "current_case.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.pop("FASTNN_BACKEND", None)
    # The first run also compiles the Numba kernels; a hang of one example is caught
    # earlier, inside the driver, by its faulthandler watchdog.
    timeout = 600 + EXAMPLES // 2
    cmd = [sys.executable, os.path.join(HERE, "fuzz_driver.py"), "--seed", str(SEED), "--examples", str(EXAMPLES),
           "--progress", str(progress), "--hang-seconds", "300"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        case = progress.read_text() if progress.exists() else "?"
        pytest.fail(f"fuzz driver still running after {timeout} s (a hang?); last case:\n{case}\n"
                    f"{(exc.stdout or b'')[-3000:]!r}")
    output = proc.stdout + proc.stderr
    case = progress.read_text() if progress.exists() else ""
    if proc.returncode < 0:
        pytest.fail(f"the fuzz driver died of signal {-proc.returncode} (a crash) while running:\n{case}\n"
                    f"{output[-6000:]}")
    assert proc.returncode == 0, f"fuzz (seed {SEED}) found a problem:\n{output[-12000:]}"
    assert "FUZZ OK" in proc.stdout, output[-3000:]
    # Evidence that the examples reached every function, both to a result and to an error.
    seen = {m[0]: (int(m[1]), int(m[2]))
            for m in re.findall(r"^  (\w+): (\d+) results, (\d+) errors$", proc.stdout, re.M)}
    unreached = [fn for fn in PUBLIC if seen.get(fn, (0, 0))[0] == 0]
    assert not unreached, f"no example of {unreached} got past validation:\n{proc.stdout[-3000:]}"
    never_refused = [fn for fn in PUBLIC if seen.get(fn, (0, 0))[1] == 0]
    assert EXAMPLES < 1000 or not never_refused, f"no bad input reached {never_refused}"
