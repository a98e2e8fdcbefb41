"""The benchmark runner's logic: case selection, arithmetic, the report and its JSON.

Nothing here is timed: the timing loop runs against a fake clock and the reports
are built from made-up medians. PyTorch, rich and matplotlib are optional; the
tests that need them skip without them.
"""
import json
import math

import numpy as np
import pytest

import fastnn
from fastnn import bench

# --- a made-up run ----------------------------------------------------------------------

BACKENDS = ["cython", "numba"]


def fake_raw(case_ids=("C2", "P1", "B1", "L2"), threads=(1,), torch=True, seconds=None, memory=None,
             defaults=None):
    """A raw report as :func:`bench.run` returns it, with chosen medians.

    ``seconds(case, pass_, n, impl)`` gives each median; by default torch takes 1 s,
    cython 0.5 s and numba 2 s at one thread, all twice as fast at two.
    """
    def default_seconds(case, pass_, n, impl):
        return {"torch": 1.0, "cython": 0.5, "numba": 2.0}[impl] / n

    seconds = seconds or default_seconds
    cases = [bench.CASES[i] for i in case_ids]
    impls = BACKENDS + (["torch"] if torch else [])
    timings = []
    for case in cases:
        for n in threads:
            for pass_ in bench.PASSES:
                for impl in impls:
                    value = seconds(case.id, pass_, n, impl)
                    entry = {"median_s": value, "samples_s": [value], "number": 1} if value else \
                        {"skipped": f"x: backend {impl!r} has no conv2d_forward kernel"}
                    timings.append({"case": case.id, "pass": pass_, "threads": n, "impl": impl, **entry})
    reference = []
    for case in cases:
        for pass_ in bench.PASSES:
            for impl, value in (("reference", 3.0), ("cython", 0.001), ("numba", 0.003)):
                reference.append({"case": case.id, "pass": pass_, "threads": threads[0], "impl": impl,
                                  "shape": bench.describe(bench.scaled_down(case)), "median_s": value,
                                  "samples_s": [value], "number": 1})
    return {
        "schema": bench.SCHEMA,
        "environment": {"date": "2026-01-02T03:04:05+00:00", "fastnn": "0.1.0", "python": "3.11.7",
                        "numpy": "2.0", "scipy": "1.14", "numba": "0.60", "torch": "2.13.0" if torch else None,
                        "cpu": "Test CPU", "cpu_count": 2, "blas": [{"owner": "scipy", "internal_api": "openblas",
                                                                     "version": "0.3"}],
                        "backends": BACKENDS + ["reference"]},
        "config": {"cases": list(case_ids), "backends": list(BACKENDS), "threads": list(threads), "quick": False,
                   "torch": torch},
        "defaults": defaults or {"conv": "cython", "pool": "cython", "bmm": "numba", "lstm": "numba"},
        "roofline": [{"threads": n, "sgemm_gflops": 100.0 * n, "sgemm_size": 2048, "copy_gbps": 20.0}
                     for n in threads],
        "cases": [bench.case_entry(case) for case in cases],
        "timings": timings,
        "reference": reference,
        "memory": memory,
    }


def result(report, case, pass_="forward", threads=1):
    return next(r for r in report["results"]
                if r["case"] == case and r["pass"] == pass_ and r["threads"] == threads)


def target(report, prefix, pass_="forward", threads=1):
    rows = [t for t in report["targets"]
            if t["target"].startswith(prefix) and t["pass"] == pass_ and t["threads"] == threads]
    assert len(rows) == 1, (prefix, [t["target"] for t in report["targets"]])
    return rows[0]


# --- the suite --------------------------------------------------------------------------

def test_suite_cases_and_targets():
    assert [c.id for c in bench.SUITE] == ["C1", "C2", "C3", "C4", "C5", "C6", "P1", "P2", "P3",
                                           "B1", "B2", "B3", "L1", "L2", "L3"]
    assert bench.CASES["C4"].dims == dict(N=8, H=14, W=14, C_in=256, C_out=256, k=3, stride=1, pad=1)
    assert bench.CASES["P2"].dims == dict(N=8, H=112, W=112, C=64, k=3, stride=2, pad=1)
    assert bench.CASES["P3"].op == "avg_pool2d"
    assert bench.CASES["B2"].dims == dict(B=512, M=32, K=64, N=32)
    assert bench.CASES["L3"].dims == dict(T=20, m=256, n_x=512, n_a=512)
    limits = {c.id: c.target for c in bench.SUITE}
    assert {limits[i] for i in ("C1", "C2", "C3", "C4", "C5", "C6")} == {1.5}
    assert {limits[i] for i in ("P1", "P2", "P3")} == {0.5}
    assert {limits[i] for i in ("B1", "B2", "B3")} == {1.05}
    assert (limits["L1"], limits["L2"], limits["L3"]) == (1.0, 0.5, 1.0)
    assert set(bench.QUICK) <= set(bench.CASES)
    assert {bench.CASES[i].group for i in bench.QUICK} == {"conv", "pool", "bmm", "lstm"}


def test_output_shapes_and_work():
    assert bench.output_shape(bench.CASES["C6"]) == (16, 14, 14, 64)
    assert bench.output_shape(bench.CASES["P2"]) == (8, 56, 56, 64)
    assert bench.output_shape(bench.CASES["B2"]) == (512, 32, 32)
    assert bench.output_shape(bench.CASES["L1"]) == (50, 64, 256)
    assert bench.flops(bench.CASES["C2"], "forward") == 2 * 32 * 32 * 32 * 64 * 9 * 64
    assert bench.flops(bench.CASES["C2"], "forward_backward") == 3 * bench.flops(bench.CASES["C2"], "forward")
    assert bench.flops(bench.CASES["B1"], "forward") == 2 * 64 * 128 ** 3
    assert bench.flops(bench.CASES["L1"], "forward") == 2 * 50 * 64 * (256 + 128) * 4 * 256
    assert bench.flops(bench.CASES["P1"], "forward") is None
    assert bench.traffic_bytes(bench.CASES["P1"], "forward") == 4 * (32 * 32 * 32 * 64 + 32 * 16 * 16 * 64)
    assert bench.traffic_bytes(bench.CASES["P1"], "forward_backward") == 2 * bench.traffic_bytes(
        bench.CASES["P1"], "forward")
    assert bench.traffic_bytes(bench.CASES["C1"], "forward") is None


def test_scaled_down_cases_are_small_with_the_same_geometry():
    for case in bench.SUITE:
        small = bench.scaled_down(case)
        assert small.id == case.id and small.op == case.op
        assert all(small.dims[k] <= case.dims[k] for k in case.dims)
        for key in ("k", "stride", "pad"):
            assert small.dims.get(key) == case.dims.get(key)
        assert math.prod(bench.output_shape(small)) < math.prod(bench.output_shape(case))
        assert min(bench.output_shape(small)) >= 1


def test_make_inputs_are_float32_deterministic_and_shaped():
    case = bench.scaled_down(bench.CASES["C6"])
    first, second = bench.make_inputs(case), bench.make_inputs(case)
    assert first["x"].shape == (1, 16, 16, 32) and first["w"].shape == (5, 5, 32, 16)
    assert first["grad"].shape == bench.output_shape(case)
    for key in first:
        assert first[key].dtype == np.float32
        np.testing.assert_array_equal(first[key], second[key])
    lstm = bench.make_inputs(bench.scaled_down(bench.CASES["L1"]))
    assert lstm["W"].shape == (4 * 32, 32 + 32) and lstm["b"].shape == (4 * 32,)


# --- selection --------------------------------------------------------------------------

def ids(cases):
    return [c.id for c in cases]


def test_select_cases():
    assert ids(bench.select_cases()) == ids(bench.SUITE)
    assert ids(bench.select_cases(quick=True)) == list(bench.QUICK)
    assert ids(bench.select_cases("p2,C1")) == ["C1", "P2"]  # suite order, any case
    assert ids(bench.select_cases("conv")) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert ids(bench.select_cases("L, B3")) == ["B3", "L1", "L2", "L3"]
    assert ids(bench.select_cases("C1,c1,C")) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert ids(bench.select_cases("B1", quick=True)) == ["B1"]  # explicit cases win over --quick


@pytest.mark.parametrize("spec", ["X9", "C7", "C1,nope", ","])
def test_select_cases_rejects_unknown(spec):
    with pytest.raises(ValueError, match="case"):
        bench.select_cases(spec)


def test_parse_threads():
    assert bench.parse_threads("1,2") == [1, 2]
    assert bench.parse_threads("2, 1,2") == [1, 2]
    assert bench.parse_threads("all", cpu_count=8) == [8]
    assert bench.parse_threads("1,all", cpu_count=4) == [1, 4]
    assert bench.parse_threads(None, cpu_count=3) == [3]
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match="--threads"):
            bench.parse_threads(bad)


def test_select_backends():
    available = ["cython", "numba", "reference"]
    assert bench.select_backends(None, available) == ["cython", "numba"]
    assert bench.select_backends("numba", available) == ["numba"]
    assert bench.select_backends("numba,cython,numba", available) == ["numba", "cython"]
    with pytest.raises(ValueError, match="reference"):
        bench.select_backends("reference", available)
    with pytest.raises(ValueError, match="available: cython, numba"):
        bench.select_backends("cuda", available)


def test_config_from_args():
    parser = bench.build_parser()
    config = bench.config_from_args(parser.parse_args(["--quick"]), available=["numba", "reference"])
    assert ids(config.cases) == list(bench.QUICK)
    assert config.plan == bench.QUICK_PLAN and config.backends == ["numba"]
    config = bench.config_from_args(
        parser.parse_args(["--cases", "C3,L3", "--threads", "1,2", "--no-torch", "--no-memory", "--repeat", "2"]),
        available=["cython", "numba", "reference"])
    assert ids(config.cases) == ["C3", "L3"] and config.threads == [1, 2]
    assert not config.compare_torch and not config.memory and config.reference
    assert config.plan.repeat == 2 and config.plan.min_repeat <= 2


# --- arithmetic -------------------------------------------------------------------------

def test_ratio_speedup_and_means():
    assert bench.ratio(0.5, 2.0) == 0.25
    assert bench.ratio(None, 1.0) is None and bench.ratio(1.0, None) is None and bench.ratio(1.0, 0) is None
    assert bench.speedup(3.0, 0.001) == pytest.approx(3000)
    assert bench.geomean([0.5, 2.0]) == pytest.approx(1.0)
    assert bench.geomean([0.25, 1.0, None]) == pytest.approx(0.5)
    assert bench.geomean([]) is None
    assert bench.rate(2e9, 0.5) == pytest.approx(4.0)
    assert bench.rate(None, 1.0) is None
    assert bench.percent(75.0, 100.0) == pytest.approx(75.0)
    assert bench.percent(1.0, None) is None


def test_verdict_boundaries():
    assert bench.verdict(1.5, 1.5) == "pass"
    assert bench.verdict(1.5000001, 1.5) == "miss"
    assert bench.verdict(1.6, 1.6, at_most=False) == "pass"
    assert bench.verdict(1.59, 1.6, at_most=False) == "miss"
    assert bench.verdict(None, 1.0) == "n/a"


def test_formatting():
    assert bench.fmt_time(2.5e-6) == "2.5 µs"
    assert bench.fmt_time(0.0123) == "12.3 ms"
    assert bench.fmt_time(3.5) == "3.50 s"
    assert bench.fmt_ratio(0.8123) == "0.81×" and bench.fmt_ratio(None) == "—"
    assert bench.fmt_factor(2345.6) == "2,346×"
    assert bench.impl_cell({"median_s": 0.01, "ratio": 0.5}) == ("10 ms · 0.50×", "win")
    assert bench.impl_cell({"median_s": 0.01, "ratio": 1.5})[1] == "loss"
    assert bench.impl_cell({"skipped": "no kernel"}) == ("no kernel", None)
    assert bench.impl_cell({"error": "boom"}) == ("error", None)


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
    plan = bench.Plan(repeat=4, min_repeat=2, warmup=1, min_sample_s=0.01, budget_s=100.0)
    out = bench.measure({"a": costing(clock, 0.02, calls, "a"), "b": costing(clock, 0.001, calls, "b")}, plan,
                        clock=clock)
    assert out["a"]["median_s"] == pytest.approx(0.02) and out["a"]["number"] == 1
    assert out["b"]["median_s"] == pytest.approx(0.001) and out["b"]["number"] == 10
    assert len(out["a"]["samples_s"]) == len(out["b"]["samples_s"]) == 4
    # Warm-up and calibration, then rounds in which they take turns, the first one rotating.
    a, b = ["a"], ["b"] * 10
    assert calls == ["a", "a", "b", "b"] + a + b + b + a + a + b + b + a


def test_measure_respects_the_budget_and_min_repeat():
    clock, calls = FakeClock(), []
    plan = bench.Plan(repeat=7, min_repeat=2, warmup=0, min_sample_s=0.0, budget_s=1.0)
    out = bench.measure({"slow": costing(clock, 0.4, calls, "slow"), "fast": costing(clock, 0.1, calls, "fast")},
                        plan, clock=clock)
    assert len(out["slow"]["samples_s"]) == 2      # budget allows 2, min_repeat 2
    assert len(out["fast"]["samples_s"]) == 7      # budget allows 10, capped at repeat
    plan = bench.Plan(repeat=7, min_repeat=3, warmup=0, min_sample_s=0.0, budget_s=0.1)
    out = bench.measure({"slow": costing(clock, 5.0, calls, "slow")}, plan, clock=clock)
    assert len(out["slow"]["samples_s"]) == 3      # never fewer than min_repeat


def test_measure_skips_missing_kernels_and_reports_errors():
    clock = FakeClock()

    def missing():
        raise ValueError("conv2d: backend 'numba' has no conv2d_forward kernel; backends that have it: []")

    def bad_shape():
        raise ValueError("conv2d: w expects 4 input channels but x has 3 (layout NHWC)")

    def crashes():
        raise RuntimeError("boom")

    out = bench.measure({"ok": costing(clock, 0.01, [], "ok"), "missing": missing, "bad": bad_shape,
                         "crash": crashes}, bench.QUICK_PLAN, clock=clock)
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

    out = bench.measure({"flaky": flaky}, bench.Plan(repeat=5, min_repeat=5, warmup=1, min_sample_s=0.0),
                        clock=clock)
    assert out["flaky"] == {"error": "RuntimeError: late failure"}


# --- summary: ratios, throughput, verdicts ----------------------------------------------

def test_ratios_throughput_and_default():
    report = bench.summarise(fake_raw())
    row = result(report, "C2")
    assert row["torch_s"] == 1.0
    assert row["impls"]["cython"]["ratio"] == pytest.approx(0.5)
    assert row["impls"]["numba"]["ratio"] == pytest.approx(2.0)
    assert row["default"] == "cython" and row["fastest"] == "cython"
    assert row["ratio"] == pytest.approx(0.5) and row["status"] == "pass"
    gflops = bench.flops(bench.CASES["C2"], "forward") / 0.5 / 1e9
    assert row["impls"]["cython"]["gflops"] == pytest.approx(gflops)
    assert row["impls"]["cython"]["roofline_pct"] == pytest.approx(100 * gflops / 100.0)
    assert row["impls"]["torch"]["ratio"] is None
    pool = result(report, "P1", "forward_backward")
    gbps = bench.traffic_bytes(bench.CASES["P1"], "forward_backward") / 0.5 / 1e9
    assert pool["impls"]["cython"]["gbps"] == pytest.approx(gbps) and pool["impls"]["cython"]["gflops"] is None
    assert pool["impls"]["cython"]["roofline_pct"] == pytest.approx(100 * gbps / 20.0)
    assert pool["ratio"] == pytest.approx(0.5) and pool["status"] == "pass"  # the limit is inclusive
    # numba is the default for bmm and LSTM here but cython is faster: the report says so.
    bmm = result(report, "B1")
    assert bmm["default"] == "numba" and bmm["fastest"] == "cython"
    assert bmm["ratio"] == pytest.approx(2.0) and bmm["status"] == "miss"


def test_group_targets():
    times = {"C1": 0.5, "C2": 1.6, "C3": 0.8, "C4": 1.0, "C5": 1.0, "C6": 1.0}

    def seconds(case, pass_, n, impl):
        return 1.0 if impl == "torch" else times.get(case, 1.0)

    report = bench.summarise(fake_raw(case_ids=tuple(times), seconds=seconds))
    geo = target(report, "conv2d C1–C6: geometric mean")
    assert geo["value"] == pytest.approx(bench.geomean(times.values())) and geo["status"] == "pass"
    worst = target(report, "conv2d C1–C6: every case")
    assert worst["value"] == pytest.approx(1.6) and worst["worst"] == "C2" and worst["status"] == "miss"


def test_lstm_targets_are_per_case():
    report = bench.summarise(fake_raw(case_ids=("L1", "L2", "L3"),
                                      seconds=lambda c, p, n, impl: 1.0 if impl == "torch" else 0.6))
    assert target(report, "LSTM L1")["status"] == "pass"
    assert target(report, "LSTM L2")["status"] == "miss"
    assert target(report, "LSTM L3")["limit"] == 1.0


def test_roofline_target_uses_the_default_backend():
    def seconds(case, pass_, n, impl):
        work = bench.flops(bench.CASES[case], pass_)
        return {"torch": 1.0, "cython": work / 80e9, "numba": work / 70e9}[impl]  # 80 % and 70 % of 100

    report = bench.summarise(fake_raw(case_ids=("C2", "C3", "C4"), seconds=seconds))
    row = target(report, "conv2d C2,C3,C4: ≥ 75 % of SGEMM")
    assert row["value"] == pytest.approx(80.0) and row["status"] == "pass"
    report = bench.summarise(fake_raw(case_ids=("C2", "C3", "C4"), seconds=seconds,
                                      defaults={"conv": "numba", "pool": "cython", "bmm": "cython", "lstm": "cython"}))
    assert target(report, "conv2d C2,C3,C4: ≥ 75 % of SGEMM")["status"] == "miss"


def test_thread_scaling():
    def seconds(case, pass_, n, impl):
        return {"C2": 1.0, "P1": 1.0}[case] / (1.7 if n == 2 and case == "C2" else 1.2 if n == 2 else 1)

    report = bench.summarise(fake_raw(case_ids=("C2", "P1"), threads=(1, 2), seconds=seconds))
    rows = {(r["case"], r["pass"]): r for r in report["thread_scaling"]}
    assert rows[("C2", "forward")]["speedup"] == pytest.approx(1.7)
    assert rows[("C2", "forward")]["target"] == 1.6 and rows[("C2", "forward")]["status"] == "pass"
    assert rows[("P1", "forward")]["target"] is None  # P1 is not one of the scaling cases
    assert rows[("C2", "forward")]["impls"]["torch"] == pytest.approx(1.7)
    assert target(report, "C2: speed-up 1 → 2 threads", threads=2)["status"] == "pass"
    # Both thread counts get the group targets.
    assert target(report, "conv2d C2: geometric mean", threads=2)["value"] == pytest.approx(1.0)
    assert bench.summarise(fake_raw(threads=(2,)))["thread_scaling"] == []


def test_reference_speedups():
    report = bench.summarise(fake_raw(case_ids=("C1",)))
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
    report = bench.summarise(fake_raw(memory=memory))
    entries = report["memory"]["backends"]
    assert entries["cython"]["cache_bytes"] == 11 * mib
    assert entries["cython"]["bound_bytes"] == (49 + 11 + 64) * mib and entries["cython"]["status"] == "pass"
    assert entries["numba"]["status"] == "miss"
    assert entries["other"]["status"] == "untraced"
    assert "status" not in entries["broken"]
    assert "status" not in memory["backends"]["cython"]  # the raw section is left as it was
    assert {t["status"] for t in report["targets"] if t["target"].startswith("memory")} == {"pass", "miss",
                                                                                            "untraced"}


def test_without_torch_nothing_is_judged():
    report = bench.summarise(fake_raw(torch=False))
    assert all(r["ratio"] is None and r["status"] == "n/a" for r in report["results"])
    # Only what needs no comparison is judged: the roofline and the choice of the default backend.
    judged = [t["target"] for t in report["targets"] if t["status"] != "n/a"]
    assert judged and all("SGEMM" in name or "backend=None" in name for name in judged)
    markdown = bench.render_markdown(report)
    assert "PyTorch not installed" in markdown and "| not installed |" in markdown
    assert "**" not in markdown.split("#### Targets")[0].split("| case |")[1]


def test_missing_kernels_show_as_such():
    def seconds(case, pass_, n, impl):
        return None if impl == "numba" else 1.0

    report = bench.summarise(fake_raw(case_ids=("C1",), seconds=seconds))
    row = result(report, "C1")
    assert "skipped" in row["impls"]["numba"] and row["fastest"] == "cython"
    assert "no kernel" in bench.render_markdown(report)


# --- JSON -------------------------------------------------------------------------------

def test_report_round_trips_through_json(tmp_path):
    report = bench.validate_report(bench.summarise(fake_raw(threads=(1, 2))))
    path = tmp_path / "run.json"
    bench.save_json(report, path)
    loaded = bench.load_json(path)
    assert loaded == json.loads(json.dumps(report))
    for key in ("date", "fastnn", "python", "numpy", "torch", "cpu", "cpu_count", "blas", "backends"):
        assert key in loaded["environment"]
    assert loaded["config"]["threads"] == [1, 2]


def test_a_saved_report_is_summarised_again(tmp_path):
    stale = bench.summarise(fake_raw())
    stale["results"] = []
    path = tmp_path / "run.json"
    bench.save_json(stale, path)
    assert len(bench.load_json(path)["results"]) == 4 * 2


def test_validate_report_rejects_incomplete_reports():
    report = bench.summarise(fake_raw())
    with pytest.raises(ValueError, match="schema"):
        bench.validate_report({**report, "schema": "other/9"})
    for key in ("environment", "results", "targets"):
        with pytest.raises(ValueError, match=key):
            bench.validate_report({k: v for k, v in report.items() if k != key})
    broken = json.loads(json.dumps(report))
    del broken["environment"]["cpu"]
    with pytest.raises(ValueError, match="cpu"):
        bench.validate_report(broken)
    broken = json.loads(json.dumps(report))
    broken["timings"][0] = {"case": "C2", "pass": "forward", "threads": 1, "impl": "cython"}
    with pytest.raises(ValueError, match="median_s"):
        bench.validate_report(broken)


def test_environment_is_json_data():
    env = bench.environment(torch=None)
    json.dumps(env)
    assert env["fastnn"] == fastnn.__version__
    assert env["torch"] == bench._version("torch")  # installed or not, even when not compared
    assert env["backends"] == fastnn.available_backends()
    assert all("filepath" not in lib for lib in env["blas"])


# --- rendering and the command ----------------------------------------------------------

def test_markdown_marks_wins_and_misses():
    report = bench.summarise(fake_raw(threads=(1, 2)))
    markdown = bench.render_markdown(report)
    assert "#### 1 thread" in markdown and "#### 2 threads" in markdown
    assert "| case | shape | pass | PyTorch | cython | numba |" in markdown
    assert "**500 ms · 0.50×**" in markdown       # a win is bold
    assert "| 2.00 s · 2.00× |" in markdown       # a loss is not
    assert "**miss**" in markdown and "Test CPU" in markdown
    assert "Speed-up over the reference" in markdown and "3,000×" in markdown
    assert "Thread speed-up" in markdown


def test_rich_rendering():
    pytest.importorskip("rich")
    import io
    from rich.console import Console
    buffer = io.StringIO()
    bench.render_rich(bench.summarise(fake_raw(threads=(1, 2), memory=None)), Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "C2" in text and "L2" in text and "0.50×" in text and "Targets" in text


def test_main_lists_cases(capsys):
    assert bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(case.id in out for case in bench.SUITE)


def test_main_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--cases", "Z1"])
    assert exc.value.code == 2 and "unknown case" in capsys.readouterr().err


def test_main_refuses_plot_without_matplotlib(monkeypatch, capsys):
    real = bench._have
    monkeypatch.setattr(bench, "_have", lambda name: False if name == "matplotlib" else real(name))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--quick", "--plot", "out.png"])
    assert exc.value.code == 2 and "matplotlib" in capsys.readouterr().err


def test_main_renders_a_saved_report(tmp_path, capsys):
    path, copy = tmp_path / "run.json", tmp_path / "copy.json"
    bench.save_json(bench.summarise(fake_raw()), path)
    assert bench.main(["--from-json", str(path), "--markdown", "--json", str(copy)]) == 0
    assert "| C2 |" in capsys.readouterr().out
    assert bench.load_json(copy)["results"] == bench.load_json(path)["results"]


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "ratios.png"
    bench.plot(bench.summarise(fake_raw(threads=(1, 2))), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- workloads run the public API (tiny shapes, reference backend, untimed) -------------

TINY = [
    bench.Case("c", "conv2d", dict(N=2, H=5, W=6, C_in=3, C_out=4, k=3, stride=2, pad=1), 1.5),
    bench.Case("m", "max_pool2d", dict(N=2, H=6, W=5, C=3, k=3, stride=2, pad=1), 0.5),
    bench.Case("a", "avg_pool2d", dict(N=2, H=4, W=6, C=3, k=2, stride=2, pad=0), 0.5),
    bench.Case("b", "bmm", dict(B=3, M=4, K=5, N=2), 1.05),
    bench.Case("l", "lstm", dict(T=3, m=2, n_x=4, n_a=5), 1.0),
]


@pytest.mark.parametrize("case", TINY, ids=lambda c: c.op)
def test_fastnn_workload_runs(case):
    inputs = bench.make_inputs(case)
    work = bench.fastnn_workload(case, inputs, "reference")
    out = work["forward"]()
    assert (out[0] if isinstance(out, tuple) else out).shape == bench.output_shape(case)
    grads = work["forward_backward"]()
    first_input = inputs["a"] if case.group == "bmm" else inputs["x"]
    assert (grads if case.group == "pool" else grads[0]).shape == first_input.shape


@pytest.mark.parametrize("case", TINY[:4], ids=lambda c: c.op)
def test_torch_workload_computes_the_same(case):
    torch = pytest.importorskip("torch")
    inputs = bench.make_inputs(case)
    ours = bench.fastnn_workload(case, inputs, "reference")["forward"]()
    theirs = bench.torch_workload(case, inputs, torch)["forward"]().numpy()
    if case.group in ("conv", "pool"):
        theirs = theirs.transpose(0, 2, 3, 1)  # NCHW back to NHWC
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    grads = bench.torch_workload(case, inputs, torch)["forward_backward"]()
    assert len(grads) == {"conv": 3, "pool": 1, "bmm": 2}[case.group]


def test_torch_lstm_workload_shapes():
    torch = pytest.importorskip("torch")
    case = TINY[4]
    work = bench.torch_workload(case, bench.make_inputs(case), torch)
    assert tuple(work["forward"]().shape) == bench.output_shape(case)
    assert tuple(work["forward_backward"]()[0].shape) == (3, 2, 4)


def test_default_backend_is_checked_against_the_fastest():
    report = bench.summarise(fake_raw(case_ids=("B1", "B2")))  # numba is the bmm default, cython 4x faster
    row = target(report, "bmm: backend=None (numba) within 10 %", pass_="both")
    assert row["value"] == pytest.approx(4.0) and row["status"] == "miss" and row["worst"] == "B1 fwd"
    assert "numba (cython faster)" in bench.render_markdown(report)
    close = fake_raw(case_ids=("C1",), seconds=lambda c, p, n, impl: {"torch": 1.0, "cython": 1.05,
                                                                      "numba": 1.0}[impl])
    report = bench.summarise(close)
    assert target(report, "conv2d: backend=None", pass_="both")["status"] == "pass"
    assert "(numba faster)" not in bench.render_markdown(report)


def test_header_names_unavailable_backends():
    raw = fake_raw(case_ids=("C1",))
    raw["environment"]["unavailable_backends"] = {"cython": "ImportError: the extensions are missing"}
    assert "Backend cython unavailable: ImportError" in bench.render_markdown(bench.summarise(raw))


def test_torch_installed_but_not_compared():
    raw = fake_raw(case_ids=("C1",), torch=False)
    raw["environment"]["torch"] = "2.13.0"
    markdown = bench.render_markdown(bench.summarise(raw))
    assert "PyTorch 2.13.0 (not compared)" in markdown and "| not compared |" in markdown


def test_run_collects_every_measurement(monkeypatch):
    """The orchestration, with the timing loop and the machine probes replaced by fakes."""
    timed = []

    def fake_measure(funcs, plan, clock=None):
        timed.append(list(funcs))
        return {label: {"median_s": 0.01, "samples_s": [0.01], "number": 1} for label in funcs}

    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench, "sgemm_gflops", lambda plan, size=2048: 50.0)
    monkeypatch.setattr(bench, "copy_gbps", lambda threads, plan, nbytes=0: 10.0)
    monkeypatch.setattr(bench, "memory_check", lambda backends, threads: {
        "case": "C3", "batch": 64, "shape": "…", "threads": threads, "workspace_limit_bytes": 64 * 2**20,
        "backends": {b: {"skipped": "x: backend 'b' has no conv2d_forward kernel"} for b in backends}})
    config = bench.Config(cases=bench.select_cases("C5,P1,L2"), backends=["numba"], threads=[1, 2],
                          compare_torch=False, plan=bench.QUICK_PLAN)
    steps = []

    class Recorder(bench.Progress):
        def step(self, label):
            steps.append(label)

    threads_before = fastnn.get_num_threads()
    raw = bench.run(config, Recorder())
    assert fastnn.get_num_threads() == threads_before
    assert len(steps) == bench.count_steps(config)
    assert [r["threads"] for r in raw["roofline"]] == [1, 2]
    # Per case and thread count, both passes of every implementation share one rotation.
    assert timed[0] == [("numba", "forward"), ("numba", "forward_backward")]
    assert len(raw["timings"]) == 3 * 2 * 2
    assert {(t["impl"], t["threads"]) for t in raw["timings"]} == {("numba", 1), ("numba", 2)}
    assert {t["impl"] for t in raw["reference"]} == {"reference", "numba"}
    assert {t["threads"] for t in raw["reference"]} == {1}
    assert raw["environment"]["threads"] == [1, 2] and raw["config"]["torch"] is False
    report = bench.validate_report(bench.summarise(raw))
    json.dumps(report, allow_nan=False)
