"""How the benchmark times: a plan of how hard to try, and :func:`measure`, which
times implementations side by side so that a slow phase of a shared machine hits
them all alike."""
import gc
import math
import re
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """How hard to time: ``repeat`` rounds at most (``min_repeat`` at least) within about
    ``budget_s`` per implementation; each round times enough calls to last
    ``min_sample_s``."""

    repeat: int = 7
    min_repeat: int = 3
    warmup: int = 1
    min_sample_s: float = 0.05
    budget_s: float = 4.0


FULL_PLAN = Plan()
QUICK_PLAN = Plan(repeat=5, min_repeat=3, warmup=1, min_sample_s=0.02, budget_s=1.0)
# The reference takes up to a second per call on the scaled-down shapes: one to three
# timed calls of it say all there is to say about a speed-up in the hundreds.
REFERENCE_PLAN = Plan(repeat=3, min_repeat=1, warmup=1, min_sample_s=0.02, budget_s=1.0)
# Under load a PyTorch call can take over a second: few rounds of single calls, and
# the median of those.
LOAD_PLAN = Plan(repeat=9, min_repeat=5, warmup=1, min_sample_s=0.02, budget_s=6.0)

_MISSING_KERNEL = re.compile(r"has no \w+ kernel")


def failure(exc):
    """A measurement entry for an implementation that could not run: a backend still
    lacking the kernel is skipped, anything else is an error worth showing."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError) and _MISSING_KERNEL.search(str(exc)):
        return {"skipped": str(exc)}
    return {"error": message}


def _impl(label):
    """The implementation a label times (labels may be (implementation, pass) pairs)."""
    return label[0] if isinstance(label, tuple) else label


def measure(funcs, plan, clock=time.perf_counter, before=None, settle_s=0.0):
    """Time callables side by side: warm each up, then run rounds in which each takes
    its turn (the order rotating every round) and keep the median per call.

    ``before`` maps a label to a callable run, untimed, before that label's warm-up and
    before each of its samples (e.g. setting its thread count).

    ``settle_s``: an untimed pause before a sample whose implementation differs from
    the previous sample's. With several threads, a runtime's worker threads keep
    spinning for a while after its last parallel region (libgomp's, PyTorch's,
    Numba's): the next implementation's threads would wait for the cores they hold
    (and fastnn, taking that for a busy machine, runs on one thread for a while), so
    a sample would time the previous implementation's leftovers.

    Returns {label: {"median_s", "samples_s", "number"}} or, for a callable that
    raised, {label: {"skipped": why}} / {label: {"error": why}}.
    """
    before = before or {}
    results, live = {}, {}
    for label, func in funcs.items():
        try:
            if label in before:
                before[label]()
            for _ in range(plan.warmup):
                func()
            start = clock()
            func()
            once = max(clock() - start, 1e-9)
        except Exception as exc:  # a broken kernel must not end the whole benchmark
            results[label] = failure(exc)
            continue
        number = min(max(1, math.ceil(plan.min_sample_s / once)), 100_000)
        rounds = max(plan.min_repeat, min(plan.repeat, int(plan.budget_s / (once * number))))
        live[label] = (func, number, rounds, [])
    previous = None
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(max((entry[2] for entry in live.values()), default=0)):
            gc.collect()  # outside the timed calls: garbage of the last round is not charged to the next
            labels = [label for label, entry in live.items() if entry[2] > round_]
            shift = round_ % len(labels) if labels else 0
            for label in labels[shift:] + labels[:shift]:
                func, number, _, samples = live[label]
                try:
                    if settle_s > 0 and _impl(label) != previous:
                        time.sleep(settle_s)
                    previous = _impl(label)
                    if label in before:
                        before[label]()
                    start = clock()
                    for _ in range(number):
                        func()
                    samples.append((clock() - start) / number)
                except Exception as exc:
                    results[label] = failure(exc)
                    del live[label]
    finally:
        if gc_was_enabled:
            gc.enable()
    for label, (_, number, _, samples) in live.items():
        results[label] = {"median_s": statistics.median(samples), "samples_s": samples, "number": number}
    return {label: results[label] for label in funcs}
