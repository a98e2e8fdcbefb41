"""The benchmark's logic: the suite and its selection, the timing loop, the CPU tier and
its emulation environment, the load process, the report, its rendering and its JSON.

Nothing here is timed: the timing loop runs against a fake clock and the reports
are built from made-up medians. PyTorch, rich and matplotlib are optional; the
tests that need them skip without them.
"""
import io
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import pytest

import fastnn
from fastnn.bench import cli, load, machine, render, run, suite, tier, timing, workloads
from fastnn.bench import report as model


REEXEC = cli.reexec  # the real one, for the test of what it starts


@pytest.fixture(autouse=True)
def _no_tier_asked_and_no_reexecution(monkeypatch):
    """cli.main in these tests runs as if no tier were asked for (the suite may run under
    FASTNN_ISA=avx2 or generic to test those tiers' kernels, which the re-execution
    check would otherwise answer by replacing the test process with a new benchmark
    run), and a re-execution fails the test instead of ending the run; the tests of
    the re-execution itself replace cli.reexec again (the reexecs fixture)."""
    for name in ("FASTNN_ISA", tier.REEXEC_GUARD, *tier.EMULATION_VARIABLES):
        monkeypatch.delenv(name, raising=False)

    def refuse(env, argv):
        pytest.fail(f"cli.main re-executed the process: {argv}")

    monkeypatch.setattr(cli, "reexec", refuse)


# --- a made-up run ----------------------------------------------------------------------

BACKENDS = ["cython", "numba"]
CASES = suite.CASES


def default_seconds(case, dtype, pass_, n, impl):
    """torch 1 s, cython 0.5 s, numba 2 s, NumPy 1.25 s at one thread; float64 takes
    twice as long; everything is twice as fast at two threads."""
    base = {"torch": 1.0, "cython": 0.5, "numba": 2.0, "numpy": 1.25}[impl]
    return base * (2 if dtype == "float64" else 1) / n


def fake_load(cases=("L1", "L2", "C2"), seconds=None):
    """A raw under-load section: fastnn 1 s at 1 thread, 0.8 s at 2, torch 2 s at 2."""
    seconds = seconds or (lambda case, pass_, impl, n: {("fastnn", 1): 1.0, ("fastnn", 2): 0.8,
                                                         ("torch", 2): 2.0}[(impl, n)])
    timings = []
    for case in cases:
        for n, impl in ((1, "fastnn"), (2, "fastnn"), (2, "torch")):
            for pass_ in suite.PASSES:
                value = seconds(case, pass_, impl, n)
                timings.append({"case": case, "pass": pass_, "threads": n, "impl": impl,
                                "backend": "cython" if impl == "fastnn" else None,
                                "median_s": value, "samples_s": [value], "number": 1})
    return {"threads": 2, "busy_cpu": 1, "pinned": True, "plan": {}, "timings": timings}


def fake_raw(case_ids=("C2", "P1", "B1", "L2"), threads=(1,), dtypes=("float32",), torch=True, seconds=None,
             memory=None, defaults=None, numpy=True, load=None):
    """A raw report as :func:`run.run` returns it, with chosen medians
    (``seconds(case, dtype, pass_, n, impl)``; None marks a missing kernel)."""
    seconds = seconds or default_seconds
    cases = [CASES[i] for i in case_ids]
    timings = []
    for case in cases:
        impls = BACKENDS + (["torch"] if torch else []) + (["numpy"] if numpy and suite.numpy_comparable(case) else [])
        for dtype in dtypes:
            for n in threads:
                for pass_ in suite.PASSES:
                    for impl in impls:
                        value = seconds(case.id, dtype, pass_, n, impl)
                        entry = {"median_s": value, "samples_s": [value], "number": 1} if value else \
                            {"skipped": f"x: backend {impl!r} has no conv2d_forward kernel"}
                        timings.append({"case": case.id, "dtype": dtype, "pass": pass_, "threads": n, "impl": impl,
                                        **entry})
    reference = []
    for case in cases:
        for pass_ in suite.PASSES:
            for impl, value in (("reference", 3.0), ("cython", 0.001), ("numba", 0.003)):
                reference.append({"case": case.id, "pass": pass_, "threads": 1, "impl": impl,
                                  "shape": suite.describe(suite.scaled_down(case)), "median_s": value,
                                  "samples_s": [value], "number": 1})
    return {
        "schema": model.SCHEMA,
        "environment": {"date": "2026-01-02T03:04:05+00:00", "fastnn": "0.1.0", "python": "3.11.7",
                        "numpy": "2.0", "scipy": "1.14", "numba": "0.60", "torch": "2.13.0" if torch else None,
                        "cpu": "Test CPU", "cpu_count": 2, "blas": [{"owner": "scipy", "internal_api": "openblas",
                                                                     "version": "0.3"}],
                        "backends": BACKENDS + ["reference"]},
        "config": {"cases": list(case_ids), "backends": list(BACKENDS), "threads": list(threads),
                   "dtypes": list(dtypes), "quick": False, "torch": torch, "numpy": numpy, "load": load is not None},
        "defaults": defaults or {"conv": "cython", "pool": "cython", "bmm": "numba", "lstm": "numba"},
        "roofline": [{"threads": n, "sgemm_gflops": 100.0 * n, "dgemm_gflops": 50.0 * n, "sgemm_size": 2048,
                      "copy_gbps": 20.0} for n in threads],
        "cases": [suite.case_entry(case) for case in cases],
        "timings": timings,
        "reference": reference,
        "memory": memory,
        "load": load,
    }


def result(report, case, pass_="forward", threads=1, dtype="float32"):
    return next(r for r in report["results"]
                if r["case"] == case and r["pass"] == pass_ and r["threads"] == threads and r["dtype"] == dtype)


def target(report, prefix, pass_="forward", threads=1, dtype="float32"):
    rows = [t for t in report["targets"] if t["target"].startswith(prefix) and t["pass"] == pass_
            and t["threads"] == threads and t["dtype"] == dtype]
    assert len(rows) == 1, (prefix, [t["target"] for t in report["targets"]])
    return rows[0]


def targets_named(report, prefix):
    return [t for t in report["targets"] if t["target"].startswith(prefix)]


# --- the suite --------------------------------------------------------------------------

def test_suite_cases_and_targets():
    assert [c.id for c in suite.SUITE] == ["C1", "C2", "C3", "C4", "C5", "C6", "P1", "P2", "P3",
                                           "B1", "B2", "B3", "L1", "L2", "L3", "N1", "N2", "N3", "N4", "N5"]
    assert CASES["C4"].dims == dict(N=8, H=14, W=14, C_in=256, C_out=256, k=3, stride=1, pad=1)
    assert CASES["P2"].dims == dict(N=8, H=112, W=112, C=64, k=3, stride=2, pad=1)
    assert CASES["P3"].op == "avg_pool2d"
    assert CASES["B2"].dims == dict(B=512, M=32, K=64, N=32)
    assert CASES["L3"].dims == dict(T=20, m=256, n_x=512, n_a=512)
    limits = {c.id: c.target("float32") for c in suite.SUITE}
    assert {limits[i] for i in ("C1", "C2", "C3", "C4", "C5", "C6")} == {1.5}
    assert {limits[i] for i in ("P1", "P2", "P3")} == {0.5}
    assert {limits[i] for i in ("B1", "B2", "B3")} == {1.05}
    assert (limits["L1"], limits["L2"], limits["L3"]) == (1.0, 0.5, 1.0)
    assert [limits[f"N{i}"] for i in range(1, 6)] == [0.7, 0.8, 1.0, 0.5, 0.8]
    assert CASES["N1"].dims == dict(N=32, H=32, W=32, C=64)
    assert CASES["N2"].dims == dict(N=4096, C=1000)
    assert CASES["N3"].dims == dict(N=256, n_in=1024, n_out=1024)
    assert CASES["N4"].dims == dict(B=64, T=50, V=10000, D=256)
    assert CASES["N5"].dims == dict(P=10_000_000, arrays=20)
    # float64 (PERF.md): conv by its geometric mean only, L2 not judged.
    limits = {c.id: c.target("float64") for c in suite.SUITE}
    assert {limits[i] for i in ("C1", "C2", "C3", "C4", "C5", "C6")} == {None}
    assert {limits[i] for i in ("P1", "P2", "P3")} == {0.5}
    assert {limits[i] for i in ("B1", "B2", "B3")} == {1.05}
    assert (limits["L1"], limits["L2"], limits["L3"]) == (1.0, None, 1.0)
    assert [limits[f"N{i}"] for i in range(1, 6)] == [None] * 5  # PERF.md judges them in float32
    assert set(suite.QUICK) <= set(CASES)
    assert {CASES[i].group for i in suite.QUICK} == {"conv", "pool", "bmm", "lstm", *suite.TRAINING_GROUPS}
    assert suite.LOAD_CASES == ("L1", "L2", "C2") and suite.LOAD_THREADS == 2


def test_output_shapes_and_work():
    assert suite.output_shape(CASES["C6"]) == (16, 14, 14, 64)
    assert suite.output_shape(CASES["P2"]) == (8, 56, 56, 64)
    assert suite.output_shape(CASES["B2"]) == (512, 32, 32)
    assert suite.output_shape(CASES["L1"]) == (50, 64, 256)
    assert suite.flops(CASES["C2"], "forward") == 2 * 32 * 32 * 32 * 64 * 9 * 64
    assert suite.flops(CASES["C2"], "forward_backward") == 3 * suite.flops(CASES["C2"], "forward")
    assert suite.flops(CASES["B1"], "forward") == 2 * 64 * 128 ** 3
    assert suite.flops(CASES["L1"], "forward") == 2 * 50 * 64 * (256 + 128) * 4 * 256
    assert suite.flops(CASES["P1"], "forward") is None
    assert suite.traffic_bytes(CASES["P1"], "forward") == 4 * (32 * 32 * 32 * 64 + 32 * 16 * 16 * 64)
    assert suite.traffic_bytes(CASES["P1"], "forward_backward") == 2 * suite.traffic_bytes(CASES["P1"], "forward")
    assert suite.traffic_bytes(CASES["P1"], "forward", "float64") == 2 * suite.traffic_bytes(CASES["P1"], "forward")
    assert suite.traffic_bytes(CASES["C1"], "forward") is None


def test_numpy_comparable_cases():
    assert [c.id for c in suite.SUITE if suite.numpy_comparable(c)] == ["P1", "P3", "B1", "B2", "B3",
                                                                        "L1", "L2", "L3"]


def test_scaled_down_cases_are_small_with_the_same_geometry():
    for case in suite.SUITE:
        small = suite.scaled_down(case)
        assert small.id == case.id and small.op == case.op
        assert all(small.dims[k] <= case.dims[k] for k in case.dims)
        for key in ("k", "stride", "pad"):
            assert small.dims.get(key) == case.dims.get(key)
        if suite.output_shape(case):
            assert math.prod(suite.output_shape(small)) < math.prod(suite.output_shape(case))
            assert min(suite.output_shape(small)) >= 1
        else:  # a scalar loss: its logits
            assert math.prod(small.dims.values()) < math.prod(case.dims.values())


@pytest.mark.parametrize("dtype", suite.DTYPES)
def test_make_inputs_are_deterministic_and_shaped(dtype):
    case = suite.scaled_down(CASES["C6"])
    first, second = workloads.make_inputs(case, dtype=dtype), workloads.make_inputs(case, dtype=dtype)
    assert first["x"].shape == (1, 16, 16, 32) and first["w"].shape == (5, 5, 32, 16)
    assert first["grad"].shape == suite.output_shape(case)
    for key in first:
        assert first[key].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(first[key], second[key])
    lstm = workloads.make_inputs(suite.scaled_down(CASES["L1"]), dtype=dtype)
    assert lstm["W"].shape == (4 * 32, 32 + 32) and lstm["b"].shape == (4 * 32,)


def test_both_dtypes_see_the_same_numbers():
    case = suite.scaled_down(CASES["B1"])
    single, double = workloads.make_inputs(case, dtype="float32"), workloads.make_inputs(case, dtype="float64")
    np.testing.assert_array_equal(single["a"], double["a"].astype(np.float32))


# --- selection --------------------------------------------------------------------------

def ids(cases):
    return [c.id for c in cases]


def test_select_cases():
    assert ids(suite.select_cases()) == ids(suite.SUITE)
    assert ids(suite.select_cases(quick=True)) == list(suite.QUICK)
    assert ids(suite.select_cases("p2,C1")) == ["C1", "P2"]  # suite order, any case
    assert ids(suite.select_cases("conv")) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert ids(suite.select_cases("L, B3")) == ["B3", "L1", "L2", "L3"]
    assert ids(suite.select_cases("C1,c1,C")) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert ids(suite.select_cases("B1", quick=True)) == ["B1"]  # explicit cases win over --quick


def test_select_the_load_case():
    assert suite.select() == (list(suite.SUITE), True)          # the full run has it
    assert suite.select(quick=True)[1] is False                 # the quick one not
    cases, load_ = suite.select("load")
    assert cases == [] and load_ is True
    cases, load_ = suite.select("C2,LOAD")
    assert ids(cases) == ["C2"] and load_ is True
    assert suite.select("C2")[1] is False


@pytest.mark.parametrize("spec", ["X9", "C7", "C1,nope", ","])
def test_select_cases_rejects_unknown(spec):
    with pytest.raises(ValueError, match="case"):
        suite.select_cases(spec)


def test_parse_threads():
    assert suite.parse_threads("1,2") == [1, 2]
    assert suite.parse_threads("2, 1,2") == [1, 2]
    assert suite.parse_threads("all", cpu_count=8) == [8]
    assert suite.parse_threads("1,all", cpu_count=4) == [1, 4]
    assert suite.parse_threads(None, cpu_count=3) == [3]
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match="--threads"):
            suite.parse_threads(bad)


def test_parse_dtypes():
    assert suite.parse_dtypes(None) == ["float32", "float64"]
    assert suite.parse_dtypes(None, quick=True) == ["float32"]
    assert suite.parse_dtypes("float64,float32") == ["float32", "float64"]
    assert suite.parse_dtypes("f64") == ["float64"]
    assert suite.parse_dtypes("both", quick=True) == ["float32", "float64"]
    for bad in ("float16", "int8", ","):
        with pytest.raises(ValueError, match="dtype"):
            suite.parse_dtypes(bad)


def test_select_backends():
    available = ["cython", "numba", "reference"]
    assert suite.select_backends(None, available) == ["cython", "numba"]
    assert suite.select_backends("numba", available) == ["numba"]
    assert suite.select_backends("numba,cython,numba", available) == ["numba", "cython"]
    with pytest.raises(ValueError, match="reference"):
        suite.select_backends("reference", available)
    with pytest.raises(ValueError, match="available: cython, numba"):
        suite.select_backends("cuda", available)


def test_config_from_args(monkeypatch):
    monkeypatch.delenv("FASTNN_ISA", raising=False)
    parser = cli.build_parser()
    config = cli.config_from_args(parser.parse_args(["--quick"]), available=["numba", "reference"])
    assert ids(config.cases) == list(suite.QUICK) and config.dtypes == ["float32"]
    assert config.plan == timing.QUICK_PLAN and config.backends == ["numba"]
    assert not config.load and not config.memory and config.compare_numpy
    config = cli.config_from_args(parser.parse_args([]), available=["cython", "numba", "reference"])
    assert config.dtypes == ["float32", "float64"] and config.load and config.memory and config.isa is None
    config = cli.config_from_args(
        parser.parse_args(["--cases", "C3,L3", "--threads", "1,2", "--no-torch", "--no-memory", "--repeat", "2",
                           "--dtype", "float64", "--no-numpy", "--isa", "avx2"]),
        available=["cython", "numba", "reference"])
    assert ids(config.cases) == ["C3", "L3"] and config.threads == [1, 2] and config.dtypes == ["float64"]
    assert not config.compare_torch and not config.memory and config.reference and not config.load
    assert not config.compare_numpy and config.isa == "avx2"
    assert config.plan.repeat == 2 and config.plan.min_repeat <= 2
    config = cli.config_from_args(parser.parse_args(["--cases", "load"]), available=["cython", "reference"])
    assert config.cases == [] and config.load and not config.reference and not config.memory


def test_parser_rejects_an_unknown_tier(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--isa", "avx10"])
    assert "avx10" in capsys.readouterr().err


# --- arithmetic -------------------------------------------------------------------------

def test_ratio_speedup_and_means():
    assert model.ratio(0.5, 2.0) == 0.25
    assert model.ratio(None, 1.0) is None and model.ratio(1.0, None) is None and model.ratio(1.0, 0) is None
    assert model.speedup(3.0, 0.001) == pytest.approx(3000)
    assert model.geomean([0.5, 2.0]) == pytest.approx(1.0)
    assert model.geomean([0.25, 1.0, None]) == pytest.approx(0.5)
    assert model.geomean([]) is None
    assert model.rate(2e9, 0.5) == pytest.approx(4.0)
    assert model.rate(None, 1.0) is None
    assert model.percent(75.0, 100.0) == pytest.approx(75.0)
    assert model.percent(1.0, None) is None


def test_verdict_boundaries():
    assert model.verdict(1.5, 1.5) == "pass"
    assert model.verdict(1.5000001, 1.5) == "miss"
    assert model.verdict(1.6, 1.6, at_most=False) == "pass"
    assert model.verdict(1.59, 1.6, at_most=False) == "miss"
    assert model.verdict(None, 1.0) == "n/a"


def test_formatting():
    assert render.fmt_time(2.5e-6) == "2.5 µs"
    assert render.fmt_time(0.0123) == "12.3 ms"
    assert render.fmt_time(3.5) == "3.50 s"
    assert render.fmt_ratio(0.8123) == "0.81×" and render.fmt_ratio(None) == "—"
    assert render.fmt_factor(2345.6) == "2,346×"
    assert render.fmt_limit(None) == "—" and render.fmt_limit(1.05) == "≤ 1.05"
    assert render.impl_cell({"median_s": 0.01, "ratio": 0.5}) == ("10 ms · 0.50×", "win")
    assert render.impl_cell({"median_s": 0.01, "ratio": 1.5})[1] == "loss"
    assert render.impl_cell({"skipped": "no kernel"}) == ("no kernel", None)
    assert render.impl_cell({"error": "boom"}) == ("error", None)


# --- timing loop (fake clock: nothing is timed) -----------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def costing(clock, seconds, calls, label):
    def func():
        calls.append(label)
        clock.now += seconds
    return func


def test_measure_alternates_and_takes_medians():
    clock, calls = FakeClock(), []
    plan = timing.Plan(repeat=4, min_repeat=2, warmup=1, min_sample_s=0.01, budget_s=100.0)
    out = timing.measure({"a": costing(clock, 0.02, calls, "a"), "b": costing(clock, 0.001, calls, "b")}, plan,
                         clock=clock)
    assert out["a"]["median_s"] == pytest.approx(0.02) and out["a"]["number"] == 1
    assert out["b"]["median_s"] == pytest.approx(0.001) and out["b"]["number"] == 10
    assert len(out["a"]["samples_s"]) == len(out["b"]["samples_s"]) == 4
    # Warm-up and calibration, then rounds in which they take turns, the first one rotating.
    a, b = ["a"], ["b"] * 10
    assert calls == ["a", "a", "b", "b"] + a + b + b + a + a + b + b + a


def test_measure_runs_the_before_hooks_untimed():
    clock, calls = FakeClock(), []

    def setup():
        calls.append("setup")
        clock.now += 5.0  # would dominate the median if it were timed

    plan = timing.Plan(repeat=3, min_repeat=3, warmup=1, min_sample_s=0.0, budget_s=100.0)
    out = timing.measure({"a": costing(clock, 0.1, calls, "a"), "b": costing(clock, 0.2, calls, "b")}, plan,
                         clock=clock, before={"a": setup})
    assert out["a"]["median_s"] == pytest.approx(0.1) and out["b"]["median_s"] == pytest.approx(0.2)
    # Before the warm-up and before every sample of "a", never for "b".
    assert calls[:3] == ["setup", "a", "a"]
    for i, call in enumerate(calls):
        if call == "setup":
            assert calls[i + 1] == "a"
    assert calls.count("setup") == 1 + 3


def test_measure_settles_between_implementations(monkeypatch):
    """settle_s: an untimed pause before a sample that follows another implementation's
    (its threads may still spin), none between the passes of one implementation."""
    clock, calls = FakeClock(), []
    monkeypatch.setattr(timing.time, "sleep", lambda s: calls.append(("sleep", s)))
    plan = timing.Plan(repeat=2, min_repeat=2, warmup=1, min_sample_s=0.0, budget_s=100.0)
    funcs = {("x", "fwd"): costing(clock, 0.1, calls, "x"), ("x", "bwd"): costing(clock, 0.1, calls, "x"),
             ("y", "fwd"): costing(clock, 0.2, calls, "y")}
    out = timing.measure(funcs, plan, clock=clock, settle_s=0.03)
    assert out[("y", "fwd")]["median_s"] == pytest.approx(0.2)  # the pause is not timed
    rounds = calls[6:]  # after the warm-up and calibration calls
    assert rounds == [("sleep", 0.03), "x", "x", ("sleep", 0.03), "y",
                      ("sleep", 0.03), "x", ("sleep", 0.03), "y", ("sleep", 0.03), "x"]
    calls.clear()
    timing.measure(funcs, plan, clock=clock)
    assert not [c for c in calls if isinstance(c, tuple)]


def test_measure_respects_the_budget_and_min_repeat():
    clock, calls = FakeClock(), []
    plan = timing.Plan(repeat=7, min_repeat=2, warmup=0, min_sample_s=0.0, budget_s=1.0)
    out = timing.measure({"slow": costing(clock, 0.4, calls, "slow"), "fast": costing(clock, 0.1, calls, "fast")},
                         plan, clock=clock)
    assert len(out["slow"]["samples_s"]) == 2      # budget allows 2, min_repeat 2
    assert len(out["fast"]["samples_s"]) == 7      # budget allows 10, capped at repeat
    plan = timing.Plan(repeat=7, min_repeat=3, warmup=0, min_sample_s=0.0, budget_s=0.1)
    out = timing.measure({"slow": costing(clock, 5.0, calls, "slow")}, plan, clock=clock)
    assert len(out["slow"]["samples_s"]) == 3      # never fewer than min_repeat


def test_load_plan_keeps_a_slow_call_to_few_rounds():
    clock = FakeClock()
    out = timing.measure({"torch": costing(clock, 1.2, [], "torch")}, timing.LOAD_PLAN, clock=clock)
    assert out["torch"]["number"] == 1
    assert len(out["torch"]["samples_s"]) == timing.LOAD_PLAN.min_repeat


def test_measure_skips_missing_kernels_and_reports_errors():
    clock = FakeClock()

    def missing():
        raise ValueError("conv2d: backend 'numba' has no conv2d_forward kernel; backends that have it: []")

    def bad_shape():
        raise ValueError("conv2d: w expects 4 input channels but x has 3 (layout NHWC)")

    def crashes():
        raise RuntimeError("boom")

    out = timing.measure({"ok": costing(clock, 0.01, [], "ok"), "missing": missing, "bad": bad_shape,
                          "crash": crashes}, timing.QUICK_PLAN, clock=clock)
    assert list(out) == ["ok", "missing", "bad", "crash"]
    assert "median_s" in out["ok"]
    assert "has no conv2d_forward kernel" in out["missing"]["skipped"]
    assert out["bad"] == {"error": "ValueError: conv2d: w expects 4 input channels but x has 3 (layout NHWC)"}
    assert out["crash"] == {"error": "RuntimeError: boom"}


def test_measure_records_a_failure_during_the_rounds():
    clock, state = FakeClock(), {"calls": 0}

    def flaky():
        state["calls"] += 1
        clock.now += 0.01
        if state["calls"] > 3:
            raise RuntimeError("late failure")

    out = timing.measure({"flaky": flaky}, timing.Plan(repeat=5, min_repeat=5, warmup=1, min_sample_s=0.0),
                         clock=clock)
    assert out["flaky"] == {"error": "RuntimeError: late failure"}


# --- the CPU tier and its emulation -----------------------------------------------------



def test_required_environment_below_the_top_limits_every_library():
    env = tier.required_environment("avx2", "avx512")
    assert env == {"FASTNN_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                   "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell", "NUMBA_CPU_NAME": "haswell",
                   "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma"}
    for top in ("avx2", "avx512"):
        env = tier.required_environment("generic", top)
        assert env == {"FASTNN_ISA": "generic", "ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default",
                       "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OPENBLAS_CORETYPE": "Nehalem",
                       "NUMBA_CPU_NAME": "x86-64", "NUMBA_CPU_FEATURES": "+sse2"}


@pytest.mark.parametrize("asked, top", [(None, "avx512"), ("avx512", "avx512"), ("avx2", "avx2"),
                                        ("generic", "generic"), ("avx512", "avx2")])
def test_required_environment_at_the_top_limits_nothing(asked, top):
    env = tier.required_environment(asked, top)
    assert set(env) == {"FASTNN_ISA", *tier.EMULATION_VARIABLES}
    assert set(env.values()) == {None}


def test_reexec_environment():
    required = tier.required_environment("avx2", "avx512")
    env = tier.reexec_environment(required, {"PATH": "/bin", "ATEN_CPU_CAPABILITY": "avx512"})
    assert env["PATH"] == "/bin" and env[tier.REEXEC_GUARD] == "1"
    assert {k: env[k] for k in required} == required
    # Already set: nothing to do. Set by a re-execution that could not fix it: never loop.
    assert tier.reexec_environment(required, {**required}) is None
    assert tier.reexec_environment(required, {tier.REEXEC_GUARD: "1"}) is None
    # At the top tier a leftover limit is removed.
    top = tier.required_environment(None, "avx512")
    env = tier.reexec_environment(top, {"OPENBLAS_CORETYPE": "Haswell", "FASTNN_ISA": "avx2", "HOME": "/root"})
    assert "OPENBLAS_CORETYPE" not in env and "FASTNN_ISA" not in env and env["HOME"] == "/root"
    assert tier.reexec_environment(top, {"HOME": "/root"}) is None


def test_tier_environment_from_the_option_or_fastnn_isa():
    clean = {"HOME": "/root"}
    assert cli.tier_environment(None, clean, top="avx512") is None
    env = cli.tier_environment(None, {**clean, "FASTNN_ISA": "avx2"}, top="avx512")
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["FASTNN_ISA"] == "avx2"
    env = cli.tier_environment("generic", {**clean, "FASTNN_ISA": "avx2"}, top="avx512")  # --isa wins
    assert env["FASTNN_ISA"] == "generic" and env["OPENBLAS_CORETYPE"] == "Nehalem"
    with pytest.raises(ValueError, match="highest tier is avx2"):
        cli.tier_environment("avx512", clean, top="avx2")
    with pytest.raises(ValueError, match="FASTNN_ISA"):
        cli.tier_environment(None, {"FASTNN_ISA": "sse9"}, top="avx512")


def test_reexec_runs_this_fastnn_with_the_same_arguments():
    calls = []
    REEXEC({"A": "1"}, ["--quick", "--cases", "C2"], execve=lambda *args: calls.append(args))
    (path, argv, env), = calls
    assert path == sys.executable and argv[0] == sys.executable and argv[1] == "-c"
    assert argv[3] == str(pathlib.Path(fastnn.__file__).resolve().parent.parent)
    assert argv[4:] == ["--quick", "--cases", "C2"] and env == {"A": "1"}
    assert "fastnn.bench.cli import main" in argv[2]


class Reexecuted(Exception):
    pass


@pytest.fixture
def reexecs(monkeypatch):
    """cli.main on an AVX-512 CPU, no tier asked for by the environment: each
    re-execution is recorded as (env, argv) and ends the call with Reexecuted."""
    for name in ("FASTNN_ISA", tier.REEXEC_GUARD, *tier.EMULATION_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tier, "cpu_isa", lambda: "avx512")
    seen = []

    def fake_reexec(env, argv):
        seen.append((env, argv))
        raise Reexecuted

    monkeypatch.setattr(cli, "reexec", fake_reexec)
    return seen


def test_main_reexecutes_for_a_lower_tier(reexecs):
    with pytest.raises(Reexecuted):
        cli.main(["--quick", "--isa", "avx2", "--cases", "B1"])
    (env, argv), = reexecs
    assert argv == ["--quick", "--isa", "avx2", "--cases", "B1"]
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["NUMBA_CPU_NAME"] == "haswell"


def test_end_to_end_cases_run_at_the_tier_asked_for(reexecs, capsys):
    """`--cases E --isa avx2` re-executes like the suite does (it once ran the epochs at
    the CPU's own tier, PyTorch unlimited, and labelled them avx2), after refusing a bad
    argument in this process."""
    with pytest.raises(Reexecuted):
        cli.main(["--cases", "E2", "--isa", "avx2", "--threads", "1,2"])
    (env, argv), = reexecs
    assert argv == ["--cases", "E2", "--isa", "avx2", "--threads", "1,2"]
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["FASTNN_ISA"] == "avx2"
    with pytest.raises(SystemExit) as exc:
        cli.main(["--cases", "E2", "--isa", "avx2", "--threads", "0"])
    assert exc.value.code == 2 and len(reexecs) == 1
    capsys.readouterr()


def test_tier_report_and_header_lines():
    info = {"isa": "avx2", "isa_max": "avx512", "isa_forced": "avx2"}
    environ = dict(tier.required_environment("avx2", "avx512"))
    observed = {"torch": "AVX2", "openblas": {"numpy": "Haswell", "scipy": "Haswell"}}
    report = tier.tier_report(info, "avx2", "avx512", environ, observed)
    assert report["tier"] == "avx2" and report["cpu_isa"] == "avx512" and report["missing"] == []
    lines = tier.tier_lines(report)
    assert lines[0] == "Tier avx2 (of avx512; PyTorch, BLAS and Numba limited to AVX2)"
    for text in ("ATEN_CPU_CAPABILITY=avx2 (PyTorch reports AVX2)", "ONEDNN_MAX_CPU_ISA=AVX2",
                 "MKL_ENABLE_INSTRUCTIONS=AVX2", "OPENBLAS_CORETYPE=Haswell", "scipy's OpenBLAS reports Haswell",
                 "NUMBA_CPU_NAME=haswell", "NUMBA_CPU_FEATURES=+avx,+avx2,+fma"):
        assert text in lines[1]
    assert len(lines) == 2  # fastnn runs the tier asked for: nothing more to say
    del environ["ONEDNN_MAX_CPU_ISA"]
    partial = tier.tier_lines(tier.tier_report(info, "avx2", "avx512", environ))
    assert "NOT fully limited to AVX2: ONEDNN_MAX_CPU_ISA unset" in partial[0]
    top = tier.tier_lines(tier.tier_report({"isa": "avx512", "isa_max": "avx512"}, None, "avx512", {}))
    assert top == ["Tier avx512"]
    stale = tier.tier_lines(tier.tier_report({"isa": "generic", "isa_max": "generic"}, None, "avx512",
                                             {"OPENBLAS_CORETYPE": "Haswell"}))
    assert stale[0] == "Tier avx512"
    assert "Set in the environment: OPENBLAS_CORETYPE=Haswell" in stale
    assert "fastnn reports tier generic (its highest: generic), not avx512" in stale


def test_observe_reports_what_the_libraries_run():
    seen = tier.observe()
    json.dumps(seen)
    assert seen["numba"]["cpu"]


def test_environment_is_json_data():
    env = machine.environment(torch=None)
    json.dumps(env)
    assert env["fastnn"] == fastnn.__version__
    assert env["torch"] == machine._version("torch")  # installed or not, even when not compared
    assert env["backends"] == fastnn.available_backends()
    assert all("filepath" not in lib for lib in env["blas"])
    assert env["cpu_info"].keys() >= {"cpu", "isa", "isa_max", "isa_forced", "openmp", "threads", "cpus"}
    assert env["tier"]["tier"] in tier.ISAS


# --- the load process -------------------------------------------------------------------

def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("ending", [None, RuntimeError, KeyboardInterrupt])
def test_busy_cpu_starts_a_process_and_always_stops_it(ending):
    started = []

    def popen(*args, **kwargs):
        process = __import__("subprocess").Popen(*args, **kwargs)
        started.append(process)
        return process

    cpu = load.usable_cpus()[-1]
    try:
        with load.busy_cpu(cpu, popen=popen) as spinner:
            assert _alive(spinner["pid"]) and started[0].poll() is None
            if spinner["pinned"]:
                assert os.sched_getaffinity(spinner["pid"]) == {cpu}
            if ending:
                raise ending("stop")
    except (RuntimeError, KeyboardInterrupt):
        assert ending is not None
    (process,) = started
    assert process.poll() is not None  # stopped and reaped


def test_the_spinner_leaves_when_its_parent_is_gone():
    # The spinner, started by a short-lived process that exits at once (before the
    # spinner has even started, most likely).
    import subprocess
    code = ("import os, subprocess, sys; p = subprocess.Popen([sys.executable, '-S', '-c', sys.argv[1], "
            "str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)")
    out = subprocess.run([sys.executable, "-c", code, load._SPIN], capture_output=True, text=True, check=True,
                         timeout=60)
    pid = int(out.stdout)
    try:
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, 9)


class FakeBusy:
    def __init__(self):
        self.cpus, self.active, self.entered = [], False, 0

    def __call__(self, cpu):
        import contextlib

        @contextlib.contextmanager
        def busy():
            self.cpus.append(cpu)
            self.active = True
            try:
                yield {"pid": 0, "cpu": cpu, "pinned": True}
            finally:
                self.active = False
        return busy()


def _fake_measure(record, spinner=None):
    def measure(funcs, plan, clock=None, before=None, settle_s=0.0):
        record.append({"labels": list(funcs), "plan": plan, "before": before or {}, "settle_s": settle_s,
                       "busy": spinner.active if spinner else None})
        for hook in (before or {}).values():
            hook()
        return {label: {"median_s": 0.01, "samples_s": [0.01], "number": 1} for label in funcs}
    return measure


def test_measure_under_load(monkeypatch):
    record, spinner = [], FakeBusy()
    monkeypatch.setattr(run, "measure", _fake_measure(record, spinner))
    config = run.Config(cases=[], backends=["cython"], threads=[2], load=True)
    defaults = {"conv": "cython", "pool": "numba", "bmm": "cython", "lstm": "numba"}
    section = run.measure_under_load(config, run.Progress(), None, defaults, cpus=[0, 1], busy=spinner)
    assert spinner.cpus == [1] and not spinner.active   # the last CPU kept busy, then released
    assert all(call["busy"] for call in record) and len(record) == len(suite.LOAD_CASES)
    assert record[0]["plan"] == timing.LOAD_PLAN
    assert record[0]["labels"] == [("fastnn", 1, "forward"), ("fastnn", 1, "forward_backward"),
                                   ("fastnn", 2, "forward"), ("fastnn", 2, "forward_backward")]
    assert section["busy_cpu"] == 1 and section["threads"] == 2
    assert {(t["case"], t["threads"]) for t in section["timings"]} == {(c, n) for c in suite.LOAD_CASES
                                                                       for n in (1, 2)}
    assert {t["backend"] for t in section["timings"] if t["case"] == "L1"} == {"numba"}
    # Each fastnn label sets its own thread count before it runs.
    monkeypatch.setattr(fastnn, "set_num_threads", lambda n: counts.append(n))
    counts = []
    for label, hook in record[0]["before"].items():
        hook()
        assert counts[-1] == label[1]


def test_measure_under_load_with_torch_and_skipped_on_one_cpu(monkeypatch):
    torch = pytest.importorskip("torch")
    record, spinner = [], FakeBusy()
    monkeypatch.setattr(run, "measure", _fake_measure(record, spinner))
    config = run.Config(cases=[], backends=["cython"], threads=[2], load=True)
    threads = torch.get_num_threads()
    try:
        section = run.measure_under_load(config, run.Progress(), torch, {}, cpus=[0, 1], busy=spinner)
    finally:
        torch.set_num_threads(threads)
    assert ("torch", 2, "forward") in record[0]["labels"]
    assert any(t["impl"] == "torch" for t in section["timings"])
    record.clear()
    section = run.measure_under_load(config, run.Progress(), torch, {}, cpus=[0], busy=spinner)
    assert "skipped" in section and spinner.cpus == [1] and not record


# --- workloads run the public API (tiny shapes, reference backend, untimed) -------------

def _case(id, op, dims):
    return suite.Case(id, op, dims, {"float32": 1.0, "float64": 1.0})


TINY = [
    _case("c", "conv2d", dict(N=2, H=5, W=6, C_in=3, C_out=4, k=3, stride=2, pad=1)),
    _case("m", "max_pool2d", dict(N=2, H=6, W=5, C=3, k=3, stride=2, pad=1)),
    _case("a", "avg_pool2d", dict(N=2, H=4, W=6, C=3, k=2, stride=2, pad=0)),
    _case("b", "bmm", dict(B=3, M=4, K=5, N=2)),
    _case("l", "lstm", dict(T=3, m=2, n_x=4, n_a=5)),
]


@pytest.mark.parametrize("case", TINY, ids=lambda c: c.op)
def test_fastnn_workload_runs(case):
    inputs = workloads.make_inputs(case)
    work = workloads.fastnn_workload(case, inputs, "reference")
    out = work["forward"]()
    assert (out[0] if isinstance(out, tuple) else out).shape == suite.output_shape(case)
    grads = work["forward_backward"]()
    first_input = inputs["a"] if case.group == "bmm" else inputs["x"]
    assert (grads if case.group == "pool" else grads[0]).shape == first_input.shape


@pytest.mark.parametrize("case", [c for c in TINY if suite.numpy_comparable(c)]
                         + [_case("k", "max_pool2d", dict(N=2, H=4, W=6, C=3, k=2, stride=2, pad=0))],
                         ids=lambda c: c.op)
@pytest.mark.parametrize("dtype", suite.DTYPES)
def test_numpy_workload_computes_what_fastnn_does(case, dtype):
    inputs = workloads.make_inputs(case, dtype=dtype)
    ours = workloads.fastnn_workload(case, inputs, "reference")
    theirs = workloads.numpy_workload(case, inputs)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    forward = theirs["forward"]()
    assert forward.dtype == np.dtype(dtype)
    expected = ours["forward"]()
    np.testing.assert_allclose(forward, expected[0] if isinstance(expected, tuple) else expected, **tol)
    grads, expected = theirs["forward_backward"](), ours["forward_backward"]()
    if case.group == "pool":
        np.testing.assert_allclose(grads, expected, **tol)
    elif case.group == "bmm":
        for got, want in zip(grads, expected):
            np.testing.assert_allclose(got, want, **tol)
    else:  # (dx, dW, db) against lstm_backward's (dx, dh0, dc0, dW, db)
        for got, want in zip(grads, (expected[0], expected[3], expected[4])):
            np.testing.assert_allclose(got, want, **tol)


def test_numpy_workload_only_where_numpy_has_a_vectorised_form():
    for case in (TINY[0], TINY[1]):  # convolution; pooling with overlapping, padded windows
        assert workloads.numpy_workload(case, workloads.make_inputs(case)) is None


@pytest.mark.parametrize("dtype", suite.DTYPES)
@pytest.mark.parametrize("case", TINY[:4], ids=lambda c: c.op)
def test_torch_workload_computes_the_same(case, dtype):
    torch = pytest.importorskip("torch")
    inputs = workloads.make_inputs(case, dtype=dtype)
    ours = workloads.fastnn_workload(case, inputs, "reference")["forward"]()
    theirs = workloads.torch_workload(case, inputs, torch)["forward"]().numpy()
    assert theirs.dtype == np.dtype(dtype)
    if case.group in ("conv", "pool"):
        theirs = theirs.transpose(0, 2, 3, 1)  # NCHW back to NHWC
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    grads = workloads.torch_workload(case, inputs, torch)["forward_backward"]()
    assert len(grads) == {"conv": 3, "pool": 1, "bmm": 2}[case.group]


@pytest.mark.parametrize("dtype", suite.DTYPES)
def test_torch_lstm_workload_shapes(dtype):
    torch = pytest.importorskip("torch")
    case = TINY[4]
    work = workloads.torch_workload(case, workloads.make_inputs(case, dtype=dtype), torch)
    out = work["forward"]()
    assert tuple(out.shape) == suite.output_shape(case) and str(out.dtype) == f"torch.{dtype}"
    assert tuple(work["forward_backward"]()[0].shape) == (3, 2, 4)


# --- summary: ratios, throughput, verdicts ----------------------------------------------

def test_ratios_throughput_and_default():
    report = model.summarise(fake_raw())
    row = result(report, "C2")
    assert row["torch_s"] == 1.0
    assert row["impls"]["cython"]["ratio"] == pytest.approx(0.5)
    assert row["impls"]["numba"]["ratio"] == pytest.approx(2.0)
    assert row["default"] == "cython" and row["fastest"] == "cython"
    assert row["ratio"] == pytest.approx(0.5) and row["status"] == "pass"
    gflops = suite.flops(CASES["C2"], "forward") / 0.5 / 1e9
    assert row["impls"]["cython"]["gflops"] == pytest.approx(gflops)
    assert row["impls"]["cython"]["roofline_pct"] == pytest.approx(100 * gflops / 100.0)
    assert row["impls"]["torch"]["ratio"] is None
    assert "numpy" not in row["impls"]  # NumPy has its own table
    pool = result(report, "P1", "forward_backward")
    gbps = suite.traffic_bytes(CASES["P1"], "forward_backward") / 0.5 / 1e9
    assert pool["impls"]["cython"]["gbps"] == pytest.approx(gbps) and pool["impls"]["cython"]["gflops"] is None
    assert pool["impls"]["cython"]["roofline_pct"] == pytest.approx(100 * gbps / 20.0)
    assert pool["ratio"] == pytest.approx(0.5) and pool["status"] == "pass"  # the limit is inclusive
    # numba is the default for bmm and LSTM here but cython is faster: the report says so.
    bmm = result(report, "B1")
    assert bmm["default"] == "numba" and bmm["fastest"] == "cython"
    assert bmm["ratio"] == pytest.approx(2.0) and bmm["status"] == "miss"


def test_float64_rows_use_the_dgemm_roofline_and_their_own_targets():
    report = model.summarise(fake_raw(case_ids=("C2", "P1", "L2"), dtypes=("float32", "float64")))
    assert {r["dtype"] for r in report["results"]} == {"float32", "float64"}
    conv = result(report, "C2", dtype="float64")
    gflops = suite.flops(CASES["C2"], "forward") / 1.0 / 1e9  # cython takes 1 s in float64
    assert conv["impls"]["cython"]["roofline_pct"] == pytest.approx(100 * gflops / 50.0)
    assert conv["target"] is None and conv["status"] is None  # judged by the geometric mean
    pool = result(report, "P1", "forward_backward", dtype="float64")
    gbps = suite.traffic_bytes(CASES["P1"], "forward_backward", "float64") / 1.0 / 1e9
    assert pool["impls"]["cython"]["gbps"] == pytest.approx(gbps)
    assert result(report, "L2", dtype="float64")["status"] is None
    assert result(report, "L2")["target"] == 0.5


def test_float64_targets():
    times = {"C1": 0.5, "C2": 1.6, "C3": 0.8, "C4": 1.0, "C5": 1.0, "C6": 1.0, "L1": 0.9, "L2": 0.9, "L3": 1.1}

    def seconds(case, dtype, pass_, n, impl):
        return 1.0 if impl in ("torch", "numpy") else times.get(case, 1.0)

    report = model.summarise(fake_raw(case_ids=tuple(times), seconds=seconds, dtypes=("float32", "float64")))
    geo = target(report, "conv2d C1–C6: geometric mean", dtype="float64")
    assert geo["value"] == pytest.approx(model.geomean([times[c] for c in times if c[0] == "C"]))
    assert geo["status"] == "pass"
    assert not [t for t in report["targets"] if t["dtype"] == "float64" and "every case ≤ 1.5" in t["target"]]
    assert target(report, "conv2d C1–C6: every case ≤ 1.5")["status"] == "miss"  # float32 only
    lstm = target(report, "LSTM L1,L3: every case ≤ 1", dtype="float64")
    assert lstm["value"] == pytest.approx(1.1) and lstm["worst"] == "L3" and lstm["status"] == "miss"
    assert not [t for t in report["targets"] if t["dtype"] == "float64" and "L2" in t["target"]]
    assert target(report, "LSTM L2: ≤ 0.5")["status"] == "miss"
    # Roofline, thread scaling and memory are float32 targets.
    assert {t["dtype"] for t in report["targets"] if "SGEMM" in t["target"]} == {"float32"}


def test_group_targets():
    times = {"C1": 0.5, "C2": 1.6, "C3": 0.8, "C4": 1.0, "C5": 1.0, "C6": 1.0}

    def seconds(case, dtype, pass_, n, impl):
        return 1.0 if impl == "torch" else times.get(case, 1.0)

    report = model.summarise(fake_raw(case_ids=tuple(times), seconds=seconds))
    geo = target(report, "conv2d C1–C6: geometric mean")
    assert geo["value"] == pytest.approx(model.geomean(times.values())) and geo["status"] == "pass"
    worst = target(report, "conv2d C1–C6: every case")
    assert worst["value"] == pytest.approx(1.6) and worst["worst"] == "C2" and worst["status"] == "miss"


def test_lstm_targets_are_per_case():
    report = model.summarise(fake_raw(case_ids=("L1", "L2", "L3"),
                                      seconds=lambda c, d, p, n, impl: 1.0 if impl == "torch" else 0.6))
    assert target(report, "LSTM L1")["status"] == "pass"
    assert target(report, "LSTM L2")["status"] == "miss"
    assert target(report, "LSTM L3")["limit"] == 1.0


def test_roofline_target_uses_the_default_backend():
    def seconds(case, dtype, pass_, n, impl):
        work = suite.flops(CASES[case], pass_)
        return {"torch": 1.0, "cython": work / 80e9, "numba": work / 70e9}[impl]  # 80 % and 70 % of 100

    report = model.summarise(fake_raw(case_ids=("C2", "C3", "C4"), seconds=seconds))
    row = target(report, "conv2d C2,C3,C4: ≥ 75 % of SGEMM")
    assert row["value"] == pytest.approx(80.0) and row["status"] == "pass"
    report = model.summarise(fake_raw(case_ids=("C2", "C3", "C4"), seconds=seconds,
                                      defaults={"conv": "numba", "pool": "cython", "bmm": "cython", "lstm": "cython"}))
    assert target(report, "conv2d C2,C3,C4: ≥ 75 % of SGEMM")["status"] == "miss"


def test_thread_scaling():
    def seconds(case, dtype, pass_, n, impl):
        return 1.0 / (1.7 if n == 2 and case == "C2" else 1.2 if n == 2 else 1)

    report = model.summarise(fake_raw(case_ids=("C2", "P1"), threads=(1, 2), seconds=seconds,
                                      dtypes=("float32", "float64")))
    rows = {(r["case"], r["dtype"], r["pass"]): r for r in report["thread_scaling"]}
    c2 = rows[("C2", "float32", "forward")]
    assert c2["speedup"] == pytest.approx(1.7) and c2["target"] == 1.6 and c2["status"] == "pass"
    assert rows[("P1", "float32", "forward")]["target"] is None  # P1 is not one of the scaling cases
    assert rows[("C2", "float64", "forward")]["target"] is None  # reported in float64, judged in float32
    assert c2["impls"]["torch"] == pytest.approx(1.7)
    assert target(report, "C2: speed-up 1 → 2 threads", threads=2)["status"] == "pass"
    # Both thread counts get the group targets.
    assert target(report, "conv2d C2: geometric mean", threads=2)["value"] == pytest.approx(1.0)
    assert model.summarise(fake_raw(threads=(2,)))["thread_scaling"] == []


def test_reference_speedups():
    report = model.summarise(fake_raw(case_ids=("C1",)))
    row = next(r for r in report["speedups"] if r["pass"] == "forward")
    assert row["reference_s"] == 3.0
    assert row["impls"]["cython"]["speedup"] == pytest.approx(3000)
    assert row["impls"]["numba"]["speedup"] == pytest.approx(1000)


def test_memory_verdicts():
    mib = 2**20
    memory = {"case": "C3", "batch": 64, "shape": "…", "threads": 1, "workspace_limit_bytes": 64 * mib,
              "backends": {
                  "cython": {"peak_bytes": 100 * mib, "retained_bytes": 60 * mib, "output_bytes": 49 * mib},
                  "numba": {"peak_bytes": 200 * mib, "retained_bytes": 49 * mib, "output_bytes": 49 * mib},
                  "other": {"peak_bytes": 1 * mib, "retained_bytes": 0, "output_bytes": 49 * mib},
                  "broken": {"error": "RuntimeError: boom"}}}
    report = model.summarise(fake_raw(memory=memory))
    entries = report["memory"]["backends"]
    assert entries["cython"]["cache_bytes"] == 11 * mib
    assert entries["cython"]["bound_bytes"] == (49 + 11 + 64) * mib and entries["cython"]["status"] == "pass"
    assert entries["numba"]["status"] == "miss"
    assert entries["other"]["status"] == "untraced"
    assert "status" not in entries["broken"]
    assert "status" not in memory["backends"]["cython"]  # the raw section is left as it was
    assert {t["status"] for t in targets_named(report, "memory")} == {"pass", "miss", "untraced"}


def test_without_torch_nothing_is_judged_against_it():
    report = model.summarise(fake_raw(torch=False, numpy=False))
    assert all(r["ratio"] is None and r["status"] in ("n/a", None) for r in report["results"])
    # Only what needs no comparison is judged: the roofline and the choice of the default backend.
    judged = [t["target"] for t in report["targets"] if t["status"] != "n/a"]
    assert judged and all("SGEMM" in name or "backend=None" in name for name in judged)
    markdown = render.render_markdown(report)
    assert "PyTorch not installed" in markdown and "| not installed |" in markdown
    assert "**" not in markdown.split("#### Targets")[0].split("| case |")[1]


def test_missing_kernels_show_as_such():
    def seconds(case, dtype, pass_, n, impl):
        return None if impl == "numba" else 1.0

    report = model.summarise(fake_raw(case_ids=("C1",), seconds=seconds))
    row = result(report, "C1")
    assert "skipped" in row["impls"]["numba"] and row["fastest"] == "cython"
    assert "no kernel" in render.render_markdown(report)


def test_default_backend_is_checked_against_the_fastest_per_dtype():
    report = model.summarise(fake_raw(case_ids=("B1", "B2"), dtypes=("float32", "float64")))
    for dtype in suite.DTYPES:  # numba is the bmm default, cython 4x faster
        row = target(report, "bmm: backend=None (numba) within 10 %", pass_="both", dtype=dtype)
        assert row["value"] == pytest.approx(4.0) and row["status"] == "miss" and row["worst"] == "B1 fwd"
    assert "numba (cython faster)" in render.render_markdown(report)

    def close(case, dtype, pass_, n, impl):  # numba the default: close in float32, 1.5x slower in float64
        return {"torch": 1.0, "numpy": 1.0, "cython": 1.0 if dtype == "float32" else 1.0,
                "numba": 1.05 if dtype == "float32" else 1.5}[impl]

    report = model.summarise(fake_raw(case_ids=("B1",), seconds=close, dtypes=("float32", "float64")))
    assert target(report, "bmm: backend=None", pass_="both")["status"] == "pass"
    assert target(report, "bmm: backend=None", pass_="both", dtype="float64")["status"] == "miss"


# --- against NumPy ----------------------------------------------------------------------

def test_numpy_rows_and_the_bmm_target():
    def seconds(case, dtype, pass_, n, impl):
        if impl == "numpy":
            return {"B1": 0.4, "B2": 1.0, "P1": 1.0, "L2": 4.0}[case]
        return {"torch": 1.0, "cython": 0.5, "numba": 0.5}[impl]

    report = model.summarise(fake_raw(case_ids=("C2", "P1", "B1", "B2", "L2"), seconds=seconds,
                                      dtypes=("float32", "float64"),
                                      defaults={"conv": "cython", "pool": "numba", "bmm": "cython",
                                                "lstm": "cython"}))
    rows = {(r["case"], r["dtype"], r["pass"]): r for r in report["numpy_results"]}
    assert {r[0] for r in rows} == {"P1", "B1", "B2", "L2"}  # no NumPy form of a convolution
    b1 = rows[("B1", "float64", "forward")]
    assert b1["ratio"] == pytest.approx(0.5 / 0.4) and b1["target"] == 1.0 and b1["status"] == "miss"
    assert rows[("B1", "float32", "forward_backward")]["target"] is None   # forward is judged
    assert rows[("L2", "float32", "forward")]["ratio"] == pytest.approx(0.125)
    assert rows[("L2", "float32", "forward")]["status"] is None            # reported only
    assert rows[("P1", "float32", "forward")]["default"] == "numba"
    for dtype in suite.DTYPES:
        row = target(report, "bmm B1,B2: ≤ 1 × NumPy", dtype=dtype)
        assert row["value"] == pytest.approx(1.25) and row["worst"] == "B1" and row["status"] == "miss"
    assert not [t for t in report["targets"] if "NumPy" in t["target"] and "LSTM" in t["target"]]


def test_numpy_section_renders():
    report = model.summarise(fake_raw(case_ids=("P1", "B1"), dtypes=("float32", "float64")))
    markdown = render.render_markdown(report)
    section = markdown.split("#### Against plain NumPy")[1].split("####")[0]
    assert "| case | shape | dtype | threads | pass | NumPy | fastnn (default) | ratio | target | status |" in section
    # numba is the bmm default here: 2 s against NumPy's 1.25 s
    assert "| B1 | (64, 128, 128) @ (64, 128, 128) | float32 | 1 | fwd | 1.25 s | 2.00 s (numba) | 1.60× | ≤ 1 | " \
           "**miss** |" in section
    assert "| float64 | 1 | fwd+bwd | 2.50 s | 4.00 s (numba) | 1.60× | — | — |" in section
    assert "| P1 |" in section
    assert "Against plain NumPy" not in render.render_markdown(model.summarise(fake_raw(numpy=False)))


# --- under load -------------------------------------------------------------------------

def test_load_rows_and_targets():
    report = model.summarise(fake_raw(load=fake_load()))
    rows = {(r["case"], r["pass"]): r for r in report["load_results"]}
    assert list(dict.fromkeys(r["case"] for r in report["load_results"])) == ["L1", "L2", "C2"]
    l1 = rows[("L1", "forward")]
    assert l1["self_ratio"] == pytest.approx(0.8) and l1["self_status"] == "pass"
    assert l1["torch_ratio"] == pytest.approx(0.4) and l1["torch_status"] == "pass"
    assert target(report, "under load, L1,L2,C2: fastnn at 2 threads ≤ 1 × its own", threads=2)["status"] == "pass"

    def collapsing(case, pass_, impl, n):  # C2 at 2 threads loaded: 3x its 1-thread time
        if impl == "fastnn":
            return 1.0 if n == 1 else (3.0 if case == "C2" else 0.5)
        return 2.0

    report = model.summarise(fake_raw(load=fake_load(seconds=collapsing)))
    own = target(report, "under load, L1,L2,C2: fastnn at 2 threads ≤ 1 ×", pass_="forward_backward", threads=2)
    assert own["value"] == pytest.approx(3.0) and own["worst"] == "C2" and own["status"] == "miss"
    vs_torch = target(report, "under load, L1,L2,C2: fastnn at 2 threads ≤ 0.5 × PyTorch", threads=2)
    assert vs_torch["value"] == pytest.approx(1.5) and vs_torch["status"] == "miss"


def test_load_without_torch_judges_only_fastnn_against_itself():
    raw = fake_load()
    raw["timings"] = [t for t in raw["timings"] if t["impl"] != "torch"]
    report = model.summarise(fake_raw(load=raw))
    assert all(r["torch_ratio"] is None and r["torch_status"] is None for r in report["load_results"])
    assert target(report, "under load, L1,L2,C2: fastnn at 2 threads ≤ 0.5", threads=2)["status"] == "n/a"


def test_load_section_renders():
    report = model.summarise(fake_raw(load=fake_load()))
    markdown = render.render_markdown(report)
    section = markdown.split("#### Under load")[1].split("####")[0]
    assert "CPU 1 kept busy by another process" in section
    assert "| L1 | fwd | 1.00 s | 800 ms | 2.00 s | 0.80× | 0.40× | pass |" in section
    skipped = render.render_markdown(model.summarise(fake_raw(load={"skipped": "needs 2 CPUs, this process may "
                                                                               "use 1"})))
    assert "Skipped: needs 2 CPUs" in skipped
    only_load = fake_raw(case_ids=(), load=fake_load())
    only_load["roofline"] = []
    markdown = render.render_markdown(model.summarise(only_load))
    assert "#### float32" not in markdown and "#### Under load" in markdown


# --- JSON -------------------------------------------------------------------------------

def test_report_round_trips_through_json(tmp_path):
    raw = fake_raw(threads=(1, 2), dtypes=("float32", "float64"), load=fake_load())
    raw["environment"]["tier"] = tier.tier_report({"isa": "avx2", "isa_max": "avx512"}, "avx2", "avx512",
                                                  tier.required_environment("avx2", "avx512"))
    report = model.validate_report(model.summarise(raw))
    path = tmp_path / "run.json"
    model.save_json(report, path)
    loaded = model.load_json(path)
    assert loaded == json.loads(json.dumps(report))
    for key in ("date", "fastnn", "python", "numpy", "torch", "cpu", "cpu_count", "blas", "backends", "tier"):
        assert key in loaded["environment"]
    assert loaded["config"]["threads"] == [1, 2] and loaded["config"]["dtypes"] == ["float32", "float64"]
    assert loaded["numpy_results"] and loaded["load_results"]
    assert "Tier avx2 (of avx512; PyTorch, BLAS and Numba limited to AVX2)" in render.render_markdown(loaded)


def test_a_saved_report_is_summarised_again(tmp_path):
    stale = model.summarise(fake_raw())
    stale["results"], stale["targets"] = [], []
    path = tmp_path / "run.json"
    model.save_json(stale, path)
    loaded = model.load_json(path)
    assert len(loaded["results"]) == 4 * 2 and loaded["targets"]


def test_a_first_schema_report_is_upgraded(tmp_path):
    raw = fake_raw(case_ids=("C2", "B1"))
    raw["schema"] = model.SCHEMA_V1
    for entry in raw["timings"]:
        del entry["dtype"]
    raw["timings"] = [t for t in raw["timings"] if t["impl"] != "numpy"]
    for case in raw["cases"]:
        case["target"] = case.pop("targets")["float32"]
        case["bytes"] = case["bytes"]["float32"]
        del case["numpy"]
    for key in ("dtypes", "numpy", "load"):
        del raw["config"][key]
    del raw["load"]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(raw))
    report = model.load_json(path)
    assert report["schema"] == model.SCHEMA and report["config"]["dtypes"] == ["float32"]
    assert result(report, "C2")["ratio"] == pytest.approx(0.5)
    assert "schema" in json.dumps(raw)  # the raw input is not changed by the upgrade


def test_the_published_runs_still_render():
    paths = sorted((pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks").glob("*.json"))
    if not paths:
        pytest.skip("no published run in this checkout")
    for path in paths:
        report = model.load_json(path)
        markdown = render.render_markdown(report)
        # the sections of what the run measured (a run of some cases may leave out
        # float64 or the load case)
        headings = [f"{dtype}, {n} thread{'s' if n > 1 else ''}" for dtype in report["config"]["dtypes"]
                    for n in report["environment"]["threads"]]
        headings += ["Under load"] * bool(report.get("load_results")) + ["Targets"]
        for heading in headings:
            assert f"#### {heading}" in markdown, (path.name, heading)
        assert "Tier " in markdown, path.name


def test_validate_report_rejects_incomplete_reports():
    report = model.summarise(fake_raw())
    with pytest.raises(ValueError, match="schema"):
        model.validate_report({**report, "schema": "other/9"})
    for key in ("environment", "results", "numpy_results", "load_results", "targets"):
        with pytest.raises(ValueError, match=key):
            model.validate_report({k: v for k, v in report.items() if k != key})
    broken = json.loads(json.dumps(report))
    del broken["environment"]["cpu"]
    with pytest.raises(ValueError, match="cpu"):
        model.validate_report(broken)
    broken = json.loads(json.dumps(report))
    broken["timings"][0] = {"case": "C2", "dtype": "float32", "pass": "forward", "threads": 1, "impl": "cython"}
    with pytest.raises(ValueError, match="median_s"):
        model.validate_report(broken)
    broken = json.loads(json.dumps(report))
    del broken["targets"][0]["dtype"]
    with pytest.raises(ValueError, match="dtype"):
        model.validate_report(broken)


# --- rendering and the command ----------------------------------------------------------

def test_markdown_marks_wins_and_misses():
    report = model.summarise(fake_raw(threads=(1, 2), dtypes=("float32", "float64")))
    markdown = render.render_markdown(report)
    for heading in ("float32, 1 thread", "float32, 2 threads", "float64, 1 thread", "float64, 2 threads"):
        assert f"#### {heading}" in markdown
    assert "| case | shape | pass | PyTorch | cython | numba |" in markdown
    assert "**500 ms · 0.50×**" in markdown       # a win is bold
    assert "| 2.00 s · 2.00× |" in markdown       # a loss is not
    assert "**miss**" in markdown and "Test CPU" in markdown
    assert "| target | dtype | threads | pass | measured (worst case) | status |" in markdown
    assert "Speed-up over the reference" in markdown and "3,000×" in markdown
    assert "Thread speed-up" in markdown
    assert "SGEMM 100 GFLOP/s, DGEMM 50 GFLOP/s" in markdown


def test_rich_rendering():
    pytest.importorskip("rich")
    from rich.console import Console
    buffer = io.StringIO()
    raw = fake_raw(threads=(1, 2), dtypes=("float32", "float64"), load=fake_load())
    render.render_rich(model.summarise(raw), Console(file=buffer, width=250))
    text = buffer.getvalue()
    assert "C2" in text and "L2" in text and "0.50×" in text and "Targets" in text
    assert "float64, 2 threads" in text and "Against plain NumPy" in text and "Under load" in text


def test_main_lists_cases(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(case.id in out for case in suite.SUITE) and "load" in out


def test_main_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--cases", "Z1"])
    assert exc.value.code == 2 and "unknown case" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--dtype", "float16"])
    assert exc.value.code == 2 and "--dtype" in capsys.readouterr().err


def test_bad_arguments_are_refused_before_any_re_execution(monkeypatch, capsys):
    """Under FASTNN_ISA below the CPU's top tier the command re-executes itself with the
    libraries limited; a bad argument must be refused first, in this process."""
    monkeypatch.setenv("FASTNN_ISA", "generic")
    monkeypatch.setattr(cli.tiers, "cpu_isa", lambda: "avx2")

    def reexec(env, argv):
        raise AssertionError(f"re-executed with {argv}")

    monkeypatch.setattr(cli, "reexec", reexec)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--cases", "Z1"])
    assert exc.value.code == 2 and "unknown case" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="re-executed"):
        cli.main(["--cases", "C1", "--no-torch"])


def test_main_refuses_plot_without_matplotlib(monkeypatch, capsys):
    real = cli._have
    monkeypatch.setattr(cli, "_have", lambda name: False if name == "matplotlib" else real(name))
    with pytest.raises(SystemExit) as exc:
        cli.main(["--quick", "--plot", "out.png"])
    assert exc.value.code == 2 and "matplotlib" in capsys.readouterr().err


def test_main_renders_a_saved_report(tmp_path, capsys):
    path, copy = tmp_path / "run.json", tmp_path / "copy.json"
    model.save_json(model.summarise(fake_raw(dtypes=("float32", "float64"))), path)
    assert cli.main(["--from-json", str(path), "--markdown", "--json", str(copy)]) == 0
    assert "| C2 |" in capsys.readouterr().out
    assert model.load_json(copy)["results"] == model.load_json(path)["results"]


def test_the_package_is_the_command():
    import fastnn.bench
    assert fastnn.bench.main is cli.main
    assert (pathlib.Path(fastnn.bench.__file__).parent / "__main__.py").exists()


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "ratios.png"
    render.plot(model.summarise(fake_raw(threads=(1, 2), dtypes=("float32", "float64"))), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_header_names_unavailable_backends():
    raw = fake_raw(case_ids=("C1",))
    raw["environment"]["unavailable_backends"] = {"cython": "ImportError: the extensions are missing"}
    assert "Backend cython unavailable: ImportError" in render.render_markdown(model.summarise(raw))


def test_torch_installed_but_not_compared():
    raw = fake_raw(case_ids=("C1",), torch=False)
    raw["environment"]["torch"] = "2.13.0"
    markdown = render.render_markdown(model.summarise(raw))
    assert "PyTorch 2.13.0 (not compared)" in markdown and "| not compared |" in markdown


# --- the run (its measuring replaced by fakes) ------------------------------------------

def test_run_collects_every_measurement(monkeypatch):
    timed = []
    monkeypatch.setattr(run, "measure", _fake_measure(timed))
    monkeypatch.setattr(machine, "gemm_gflops", lambda plan, size=2048, dtype="float32":
                        50.0 if dtype == "float32" else 25.0)
    monkeypatch.setattr(machine, "copy_gbps", lambda threads, plan, nbytes=0: 10.0)
    monkeypatch.setattr(run, "memory_check", lambda backends, threads: {
        "case": "C3", "batch": 64, "shape": "…", "threads": threads, "workspace_limit_bytes": 64 * 2**20,
        "backends": {b: {"skipped": "x: backend 'b' has no conv2d_forward kernel"} for b in backends}})
    spinner = FakeBusy()
    monkeypatch.setattr(run, "busy_cpu", spinner)
    monkeypatch.setattr(run, "usable_cpus", lambda: [0, 1])
    config = run.Config(cases=suite.select_cases("C5,P1,L2"), backends=["numba"], threads=[1, 2],
                        dtypes=["float32", "float64"], compare_torch=False, load=True, plan=timing.QUICK_PLAN)
    steps = []

    class Recorder(run.Progress):
        def step(self, label):
            steps.append(label)

    threads_before = fastnn.get_num_threads()
    raw = run.run(config, Recorder())
    assert fastnn.get_num_threads() == threads_before
    assert len(steps) == run.count_steps(config)
    assert [r["threads"] for r in raw["roofline"]] == [1, 2]
    assert {r["dgemm_gflops"] for r in raw["roofline"]} == {25.0}
    # Per case, dtype and thread count, both passes of every implementation share one rotation.
    assert timed[0]["labels"] == [("numba", "forward"), ("numba", "forward_backward")]   # C5: no NumPy form
    assert ("numpy", "forward") in timed[2 * 2]["labels"]                              # P1
    assert {(t["impl"], t["threads"], t["dtype"]) for t in raw["timings"] if t["case"] == "L2"} == {
        (impl, n, dtype) for impl in ("numba", "numpy") for n in (1, 2) for dtype in ("float32", "float64")}
    assert {t["impl"] for t in raw["reference"]} == {"reference", "numba"}
    assert {t["threads"] for t in raw["reference"]} == {1}
    assert raw["environment"]["threads"] == [1, 2] and raw["config"]["torch"] is False
    assert raw["config"]["dtypes"] == ["float32", "float64"]
    assert spinner.cpus == [1] and raw["load"]["busy_cpu"] == 1
    report = model.validate_report(model.summarise(raw))
    json.dumps(report, allow_nan=False)
    assert report["numpy_results"] and report["load_results"]


def test_run_with_only_the_load_case(monkeypatch):
    timed = []
    monkeypatch.setattr(run, "measure", _fake_measure(timed))
    monkeypatch.setattr(machine, "gemm_gflops", lambda *a, **k: pytest.fail("no roofline without cases"))
    monkeypatch.setattr(run, "busy_cpu", FakeBusy())
    monkeypatch.setattr(run, "usable_cpus", lambda: [0, 1])
    config = run.Config(cases=[], backends=["numba"], threads=[2], compare_torch=False, reference=False,
                        memory=False, load=True)
    steps = []

    class Recorder(run.Progress):
        def step(self, label):
            steps.append(label)

    raw = run.run(config, Recorder())
    assert len(steps) == run.count_steps(config) == len(suite.LOAD_CASES)
    assert raw["timings"] == [] and raw["roofline"] == [] and len(timed) == len(suite.LOAD_CASES)
    model.validate_report(model.summarise(raw))


# --- end to end: E1-E3 ------------------------------------------------------------------

from fastnn.bench import e2e  # noqa: E402


def test_end_to_end_cases_are_selected_only_by_name():
    assert e2e.split_spec(None) == ([], None)
    assert e2e.split_spec("E") == (["E1", "E2", "E3"], "")
    assert e2e.split_spec("e3, C2,e1") == (["E1", "E3"], "C2")
    assert e2e.split_spec("C,load") == ([], "C,load")
    # never in the default or the quick suite
    assert not {c.id for c in suite.SUITE} & set(e2e.CASES)
    assert e2e.CASES["E1"].steps == 32 and e2e.CASES["E2"].steps == 64


def _fake_end_to_end(seconds):
    out = {"plan": {"repeat": 3, "min_repeat": 2, "warmup": 1}, "dtype": "float32", "threads": [1, 2],
           "torch": True, "cases": []}
    for case_id, (ours1, theirs1, ours2, theirs2) in seconds.items():
        timings = [{"impl": impl, "threads": n, "median_s": s} for impl, n, s in
                   (("fastnn", 1, ours1), ("torch", 1, theirs1), ("fastnn", 2, ours2), ("torch", 2, theirs2))]
        out["cases"].append({"id": case_id, "describe": e2e.describe(e2e.CASES[case_id]), "timings": timings,
                             "losses": {"steps": 5, "fastnn": [], "torch": [], "max_abs_diff": 3e-12,
                                        "tolerance": 1e-4, "verdict": "pass"},
                             "profile": {"threads": 1, "epoch_s": 2.0, "rows": [
                                 {"layer": "conv1", "forward_s": 0.5, "backward_s": 1.0, "share": 0.75}]}})
    return e2e.summarise(out)


def test_end_to_end_ratios_scaling_and_table():
    out = _fake_end_to_end({"E1": (2.0, 1.0, 1.0, 0.8), "E2": (0.5, 1.0, 0.4, 0.5)})
    e1, e2_ = out["cases"]
    assert [r["ratio"] for r in e1["ratios"]] == [2.0, 1.25] and e1["ratios"][0]["verdict"] == "miss"
    assert [r["ratio"] for r in e2_["ratios"]] == [0.5, 0.8] and e2_["ratios"][1]["verdict"] == "pass"
    assert e1["scaling"] == {"fastnn": 2.0, "torch": 1.25}
    text = e2e.render_markdown(out)
    assert "| E1 |" in text and "| 2.00 | miss |" in text and "| E2 | 1.25× | 2.00× |" in text
    assert "max |fastnn − PyTorch| = 3.00e-12" in text and "| conv1 | 0.500 | 1.000 | 75% |" in text


def test_bench_cli_runs_only_the_end_to_end_cases_when_only_they_are_named(monkeypatch, capsys):
    calls = []

    def fake_run(case_ids, threads, torch, **kwargs):
        calls.append((case_ids, threads))
        return _fake_end_to_end({"E3": (1.0, 2.0, 0.6, 1.5)})
    monkeypatch.setattr(e2e, "run", fake_run)
    monkeypatch.setattr(cli, "run", lambda *a, **k: pytest.fail("the suite must not run"))
    assert cli.main(["--cases", "E3", "--threads", "1,2", "--no-torch"]) == 0
    assert calls == [(["E3"], [1, 2])]
    assert "| E3 |" in capsys.readouterr().out


def _nn_has(*names):
    import fastnn.nn as nn
    return all(hasattr(nn, name) for name in names)


@pytest.mark.parametrize("case_id", ["E1", "E2", "E3"])
def test_end_to_end_pytorch_mirror_is_the_same_network(case_id):
    """Same weights, same batch: the first training losses of fastnn and its PyTorch
    mirror agree in float64 (a wrong layout, gate order or flatten order would not)."""
    torch = pytest.importorskip("torch")
    needed = {"E1": ("Conv2d", "MaxPool2d"), "E2": ("LSTM", "TimeDistributed"),
              "E3": ("Conv2d", "BatchNorm", "GlobalAvgPool2d")}[case_id]
    if not _nn_has(*needed):
        pytest.skip(f"fastnn.nn lacks {needed}")
    import dataclasses
    case = e2e.CASES[case_id]
    batch = case.dims["batch"] // 4
    small = dataclasses.replace(case, dims={**case.dims, "examples": 3 * batch, "batch": batch})
    check = e2e.loss_check(small, torch, steps=3)
    assert len(check["fastnn"]) == 3 and check["max_abs_diff"] < 1e-9, check
    assert check["fastnn"][0] > 0 and check["fastnn"][2] != check["fastnn"][0]  # the steps trained


def test_set_threads_holds_blas_to_the_count():
    """The roofline's GEMM and the plain-NumPy baselines run on the benchmark's thread
    count: fastnn itself leaves BLAS alone outside its own calls, so the benchmark
    must set it (a 1-thread roofline on every core would inflate the baselines)."""
    from fastnn._kernels._threads import _blas_libraries
    from fastnn.bench import set_threads
    libraries = _blas_libraries()
    if not libraries:
        pytest.skip("threadpoolctl sees no BLAS library")
    before = [lib.num_threads for lib in libraries]
    threads = fastnn.get_num_threads()
    try:
        set_threads(1)
        assert [lib.num_threads for lib in libraries] == [1] * len(libraries)
    finally:
        fastnn.set_num_threads(threads)
        for lib, n in zip(libraries, before):
            lib.set_num_threads(n)
