"""One benchmark run: measure everything a :class:`Config` asks for and return the raw
report (plain JSON data; ``report.summarise`` derives ratios and verdicts from it)."""
import gc
from dataclasses import asdict, dataclass, field

import fastnn

from . import machine
from .report import SCHEMA
from .load import busy_cpu, usable_cpus
from .suite import (CASES, LOAD_CASES, LOAD_THREADS, MEMORY_BATCH, MEMORY_CASE, NUMPY, PASSES, REFERENCE,
                    TORCH, case_entry, describe, scaled_down, with_batch)
from .timing import FULL_PLAN, LOAD_PLAN, REFERENCE_PLAN, Plan, failure, measure
from .workloads import fastnn_workload, make_inputs, numpy_workload, set_threads, torch_workload


@dataclass
class Config:
    cases: list
    backends: list
    threads: list
    dtypes: list = field(default_factory=lambda: ["float32"])
    quick: bool = False
    compare_torch: bool = True
    compare_numpy: bool = True
    reference: bool = True
    memory: bool = True
    load: bool = False
    isa: str = None
    plan: Plan = FULL_PLAN
    load_plan: Plan = LOAD_PLAN
    seed: int = 0


class Progress:
    """What the run tells about its progress; this one tells nothing."""

    def start(self, total):
        pass

    def step(self, label):
        pass

    def advance(self):
        pass

    def stop(self):
        pass


def threads_label(n):
    return f"{n} thread{'s' * (n != 1)}"


def roofline_threads(threads):
    """The single-thread roofline is always measured (the conv targets quote it), and
    the one of every thread count timed."""
    return sorted({1, *threads})


def count_steps(config):
    steps = 2 * len(roofline_threads(config.threads)) if config.cases else 0
    steps += len(config.cases) * len(config.threads) * len(config.dtypes)
    if config.reference:
        steps += len(config.cases)
    if config.memory:
        steps += 1
    if config.load:
        steps += len(LOAD_CASES)
    return steps


def run(config, progress=None, torch=None):
    """Measure everything ``config`` asks for; return the raw report (JSON data)."""
    progress = progress or Progress()
    progress.start(count_steps(config))
    previous_threads = fastnn.get_num_threads()
    report = {
        "schema": SCHEMA,
        "environment": {**machine.environment(torch, config.isa), "threads": list(config.threads)},
        "config": {"cases": [c.id for c in config.cases], "backends": list(config.backends),
                   "threads": list(config.threads), "dtypes": list(config.dtypes), "quick": config.quick,
                   "torch": torch is not None, "numpy": config.compare_numpy, "load": config.load,
                   "plan": asdict(config.plan)},
        "defaults": machine.default_backends(),
        "roofline": [],
        "cases": [case_entry(case) for case in config.cases],
        "timings": [],
        "reference": [],
        "memory": None,
        "load": None,
    }
    try:
        if config.cases:  # the roofline is what the cases are read against
            report["roofline"] = measure_roofline(config, progress, torch)
            for case in config.cases:
                for dtype in config.dtypes:
                    report["timings"] += measure_case(case, dtype, config, progress, torch)
            # Measured again after the suite, keeping the better figure: a machine that was
            # busy at the start must not make the cases look faster than its limit.
            later = measure_roofline(config, progress, torch, "roofline again")
            for entry, again in zip(report["roofline"], later):
                for key in ("sgemm_gflops", "dgemm_gflops", "copy_gbps"):
                    entry[key] = max((v for v in (entry[key], again[key]) if v is not None), default=None)
        if config.reference:
            report["reference"] = measure_reference(config, progress, torch)
        if config.memory:
            progress.step(f"memory: conv2d_forward on {MEMORY_CASE} with batch {MEMORY_BATCH}")
            set_threads(config.threads[0], torch)
            report["memory"] = memory_check(config.backends, config.threads[0])
            progress.advance()
        if config.load:
            report["load"] = measure_under_load(config, progress, torch, report["defaults"])
    finally:
        set_threads(previous_threads, torch)
        progress.stop()
    return report


# With several threads, a pause between the samples of different implementations
# (timing.measure's settle_s): longer than the spin of the pools in the process after
# their last call (libgomp's, a few milliseconds; OpenBLAS's, ~2^28 cycles, 0.1 s).
# Alone, B1 ran 1.8x faster on 2 threads than on 1; right after np.matmul, no faster.
SETTLE_S = 0.15


def measure_case(case, dtype, config, progress, torch):
    """Timings of one case in one dtype at every thread count: each fast backend,
    PyTorch and NumPy where they take part."""
    inputs = make_inputs(case, config.seed, dtype)
    impls = {name: fastnn_workload(case, inputs, name) for name in config.backends}
    if torch is not None:
        impls[TORCH] = torch_workload(case, inputs, torch)
    if config.compare_numpy and numpy_workload(case, inputs) is not None:
        impls[NUMPY] = numpy_workload(case, inputs)
    timings = []
    for n in config.threads:
        set_threads(n, torch)
        progress.step(f"{case.id} {describe(case)}, {dtype}, {threads_label(n)}")
        # Both passes of every implementation in one rotation, so that a busy spell of
        # the machine cannot favour one pass or one implementation.
        # PyTorch's thread count is set again before each of its samples: numba's
        # threading layer, started by its first call, resets PyTorch's OpenMP count
        before = {(TORCH, pass_): (lambda n=n: torch.set_num_threads(n)) for pass_ in PASSES} if torch else {}
        timed = measure({(name, pass_): work[pass_] for name, work in impls.items() for pass_ in PASSES},
                        config.plan, before=before, settle_s=SETTLE_S if n > 1 else 0.0)
        for (impl, pass_), entry in timed.items():
            timings.append({"case": case.id, "dtype": dtype, "pass": pass_, "threads": n, "impl": impl, **entry})
        progress.advance()
    return timings


def measure_roofline(config, progress, torch=None, label="roofline"):
    size = 1024 if config.quick else 2048
    roofline = []
    for n in roofline_threads(config.threads):
        progress.step(f"{label}, {threads_label(n)}")
        set_threads(n, torch)
        roofline.append(machine.roofline_entry(n, config.plan, size, config.dtypes))
        progress.advance()
    return roofline


def measure_reference(config, progress, torch):
    """Every backend against the pure-Python reference on scaled-down shapes, float32,
    at one thread: the reference is one Python loop, and thread start-up on tiny
    shapes would measure the machine's scheduler rather than the algorithm."""
    set_threads(1, torch)
    entries = []
    for case in config.cases:
        small = scaled_down(case)
        inputs = make_inputs(small, config.seed)
        impls = {name: fastnn_workload(small, inputs, name) for name in [REFERENCE, *config.backends]}
        progress.step(f"{case.id} {describe(small)}, against the reference")
        timed = measure({(name, pass_): work[pass_] for name, work in impls.items() for pass_ in PASSES},
                        REFERENCE_PLAN)
        for (impl, pass_), entry in timed.items():
            entries.append({"case": case.id, "pass": pass_, "threads": 1, "shape": describe(small),
                            "impl": impl, **entry})
        progress.advance()
    return entries


def memory_check(backends, threads):
    """Peak traced allocation of conv2d_forward on C3 with batch 64, next to what it
    must keep (output, cache) and the workspace bound that chunking im2col over the
    batch guarantees."""
    import tracemalloc
    case = with_batch(CASES[MEMORY_CASE], MEMORY_BATCH)
    inputs = make_inputs(case)
    x, w, b, d = inputs["x"], inputs["w"], inputs["b"], case.dims
    del inputs
    limit = fastnn.get_workspace_limit()
    out = {"case": MEMORY_CASE, "batch": MEMORY_BATCH, "shape": describe(case), "threads": threads,
           "workspace_limit_bytes": limit, "backends": {}}
    for backend in backends:
        try:
            # Compile and warm up outside the trace so only the call itself is measured.
            fastnn.conv2d_forward(x[:1], w, b, stride=d["stride"], padding=d["pad"], backend=backend)
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                y, cache = fastnn.conv2d_forward(x, w, b, stride=d["stride"], padding=d["pad"], backend=backend)
                current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            output = y.nbytes
            del y, cache
            out["backends"][backend] = {"peak_bytes": peak - base, "retained_bytes": current - base,
                                        "output_bytes": output}
        except Exception as exc:
            out["backends"][backend] = failure(exc)
    return out


def measure_under_load(config, progress, torch, defaults, cpus=None, busy=None):
    """L1, L2 and C2 (float32) with one CPU kept busy by another process: fastnn's
    default backend at 1 and at 2 threads, PyTorch at 2 threads, forward and forward +
    backward, all in one rotation. Skipped on a machine with a single CPU."""
    cpus = usable_cpus() if cpus is None else cpus
    busy = busy or busy_cpu
    if len(cpus) < LOAD_THREADS:
        for case_id in LOAD_CASES:
            progress.step(f"{case_id} under load: skipped")
            progress.advance()
        return {"skipped": f"needs {LOAD_THREADS} CPUs, this process may use {len(cpus)}"}
    section = {"threads": LOAD_THREADS, "plan": asdict(config.load_plan), "timings": []}
    if torch is not None:
        torch.set_num_threads(LOAD_THREADS)
    with busy(cpus[-1]) as spinner:
        section["busy_cpu"], section["pinned"] = spinner["cpu"], spinner["pinned"]
        for case_id in LOAD_CASES:
            case = CASES[case_id]
            progress.step(f"{case_id} {describe(case)}, under load")
            inputs = make_inputs(case, config.seed)
            ours = fastnn_workload(case, inputs, None)  # backend=None, what users get
            funcs, before = {}, {}
            for n in (1, LOAD_THREADS):
                for pass_ in PASSES:
                    funcs[("fastnn", n, pass_)] = ours[pass_]
                    before[("fastnn", n, pass_)] = lambda n=n: fastnn.set_num_threads(n)
            if torch is not None:
                theirs = torch_workload(case, inputs, torch)
                for pass_ in PASSES:
                    funcs[(TORCH, LOAD_THREADS, pass_)] = theirs[pass_]
            timed = measure(funcs, config.load_plan, before=before)
            for (impl, n, pass_), entry in timed.items():
                section["timings"].append({"case": case_id, "pass": pass_, "threads": n, "impl": impl,
                                           "backend": defaults.get(case.group) if impl == "fastnn" else None,
                                           **entry})
            progress.advance()
    return section
