"""The report's model: ratios, throughput, speed-ups and verdicts derived from a raw
report (pure functions of measured numbers), its validation, and its JSON form."""
import json
import math

from .suite import (DEFAULT_SLACK, GEOMEAN_LIMIT, GROUP_TITLE, JUDGED_DTYPE, LOAD_SELF_TARGET,
                    LOAD_THREADS, LOAD_TORCH_TARGET, NUMPY, NUMPY_TARGET, PASS_LABEL, PASSES, REFERENCE,
                    ROOFLINE_CASES, ROOFLINE_FRACTION, SCALING_CASES, SCALING_TARGET, SCALING_THREADS, SUITE,
                    TORCH)

SCHEMA = "fastnn-bench/2"
SCHEMA_V1 = "fastnn-bench/1"  # float32 only, no NumPy or load sections; upgraded on reading
DERIVED = ("results", "numpy_results", "speedups", "thread_scaling", "load_results", "targets")


# --- arithmetic -------------------------------------------------------------------------

def ratio(seconds, baseline_seconds):
    """fastnn time / comparison time: below 1 fastnn wins. None when either is missing."""
    if not seconds or not baseline_seconds:
        return None
    return seconds / baseline_seconds


def speedup(slow_seconds, fast_seconds):
    """How many times faster ``fast`` is than ``slow``."""
    return ratio(slow_seconds, fast_seconds)


def geomean(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def rate(amount, seconds, unit=1e9):
    """amount per second in units of ``unit`` (GFLOP/s, GB/s); None when unknown."""
    if amount is None or not seconds:
        return None
    return amount / seconds / unit


def percent(value, limit):
    if value is None or not limit:
        return None
    return 100.0 * value / limit


def verdict(value, limit, at_most=True):
    """"pass"/"miss" against a limit, "n/a" when nothing was measured."""
    if value is None:
        return "n/a"
    ok = value <= limit if at_most else value >= limit
    return "pass" if ok else "miss"


# --- summary ----------------------------------------------------------------------------

def index_by(entries, *keys):
    return {tuple(entry.get(k) for k in keys): entry for entry in entries}


def upgrade(raw):
    """A report of an older schema in the current one (a copy; ``raw`` is untouched)."""
    if raw.get("schema") != SCHEMA_V1:
        return raw
    raw = json.loads(json.dumps(raw))
    raw["schema"] = SCHEMA
    raw["config"].update(dtypes=["float32"], numpy=False, load=False)
    for entry in raw["timings"]:
        entry.setdefault("dtype", "float32")
    for case in raw["cases"]:
        case["targets"] = {"float32": case.pop("target", None), "float64": None}
        case["bytes"] = {"float32": case["bytes"]}
        case.setdefault("numpy", False)
    for entry in raw["roofline"]:
        entry.setdefault("dgemm_gflops", None)
    raw.setdefault("load", None)
    return raw


def summarise(raw):
    """Return ``raw`` plus the derived sections (:data:`DERIVED`) and the memory
    check's verdicts. They are recomputed, never trusted from the input, so a saved
    report can be re-rendered by a newer version."""
    raw = upgrade(raw)
    report = {k: v for k, v in raw.items() if k not in DERIVED}
    cases = {c["id"]: c for c in raw["cases"]}
    roof = {r["threads"]: r for r in raw["roofline"]}
    timings = index_by(raw["timings"], "case", "dtype", "pass", "threads", "impl")
    backends = raw["config"]["backends"]
    defaults = raw["defaults"]
    results, numpy_results = [], []
    for dtype in raw["config"]["dtypes"]:
        for case in cases.values():
            for n in raw["config"]["threads"]:
                for pass_ in PASSES:
                    key = (case["id"], dtype, pass_, n)
                    results.append(_result_row(case, dtype, pass_, n, timings, backends, defaults, roof.get(n, {})))
                    if (*key, NUMPY) in timings:
                        numpy_results.append(_numpy_row(case, dtype, pass_, n, timings, defaults))
    report["results"] = results
    report["numpy_results"] = numpy_results
    report["speedups"] = _reference_speedups(raw)
    report["thread_scaling"] = _thread_scaling(raw, timings, backends, defaults)
    report["load_results"] = _load_rows(raw.get("load"))
    if raw.get("memory"):
        report["memory"] = _memory_verdicts(raw["memory"])
    report["targets"] = _targets(report, cases)
    return report


def _result_row(case, dtype, pass_, n, timings, backends, defaults, roof):
    torch_s = timings.get((case["id"], dtype, pass_, n, TORCH), {}).get("median_s")
    pool = case["group"] == "pool"
    work = case["bytes"].get(dtype, {}).get(pass_) if pool else case["flops"][pass_]
    limit = roof.get("copy_gbps") if pool else roof.get("sgemm_gflops" if dtype == "float32" else "dgemm_gflops")
    impls = {}
    for impl in [*backends, TORCH]:
        entry = timings.get((case["id"], dtype, pass_, n, impl))
        if entry is None:
            continue
        if "median_s" not in entry:
            impls[impl] = {k: entry[k] for k in ("skipped", "error") if k in entry}
            continue
        seconds = entry["median_s"]
        throughput = rate(work, seconds)
        impls[impl] = {
            "median_s": seconds,
            "ratio": ratio(seconds, torch_s) if impl != TORCH else None,
            "gflops": None if pool else throughput,
            "gbps": throughput if pool else None,
            "roofline_pct": percent(throughput, limit),
        }
    timed = {name: v["median_s"] for name, v in impls.items() if name != TORCH and "median_s" in v}
    fastest = min(timed, key=timed.get) if timed else None
    default = defaults.get(case["group"])
    default_ratio = impls.get(default, {}).get("ratio")
    target = case["targets"].get(dtype)
    return {"case": case["id"], "group": case["group"], "dtype": dtype, "pass": pass_, "threads": n,
            "impls": impls, "torch_s": torch_s, "default": default, "fastest": fastest, "ratio": default_ratio,
            "target": target, "status": verdict(default_ratio, target) if target is not None else None}


def _numpy_row(case, dtype, pass_, n, timings, defaults):
    """fastnn's default backend against the NumPy a user would write."""
    numpy_entry = timings[(case["id"], dtype, pass_, n, NUMPY)]
    default = defaults.get(case["group"])
    numpy_s = numpy_entry.get("median_s")
    fastnn_s = timings.get((case["id"], dtype, pass_, n, default), {}).get("median_s")
    value = ratio(fastnn_s, numpy_s)
    target = NUMPY_TARGET.get(case["group"]) if pass_ == "forward" else None
    row = {"case": case["id"], "group": case["group"], "dtype": dtype, "pass": pass_, "threads": n,
           "numpy_s": numpy_s, "default": default, "fastnn_s": fastnn_s, "ratio": value, "target": target,
           "status": verdict(value, target) if target is not None else None}
    if numpy_s is None:
        row["error"] = numpy_entry.get("error") or numpy_entry.get("skipped")
    return row


def _reference_speedups(raw):
    entries = index_by(raw.get("reference", []), "case", "pass", "impl")
    rows = []
    for case in raw["cases"]:
        for pass_ in PASSES:
            ref = entries.get((case["id"], pass_, REFERENCE))
            if ref is None:
                continue
            ref_s = ref.get("median_s")
            impls = {}
            for impl in raw["config"]["backends"]:
                entry = entries.get((case["id"], pass_, impl))
                if entry is None:
                    continue
                impls[impl] = {"median_s": entry.get("median_s"),
                               "speedup": speedup(ref_s, entry.get("median_s"))}
            rows.append({"case": case["id"], "pass": pass_, "threads": ref["threads"], "shape": ref["shape"],
                         "reference_s": ref_s, "impls": impls,
                         **({"error": ref.get("error") or ref.get("skipped")} if ref_s is None else {})})
    return rows


def _thread_scaling(raw, timings, backends, defaults):
    threads = raw["config"]["threads"]
    if 1 not in threads or len(threads) < 2:
        return []
    rows = []
    for dtype in raw["config"]["dtypes"]:
        for case in raw["cases"]:
            for n in (t for t in threads if t > 1):
                for pass_ in PASSES:
                    impls = {}
                    for impl in [*backends, TORCH]:
                        one = timings.get((case["id"], dtype, pass_, 1, impl), {}).get("median_s")
                        many = timings.get((case["id"], dtype, pass_, n, impl), {}).get("median_s")
                        if one and many:
                            impls[impl] = speedup(one, many)
                    default = defaults.get(case["group"])
                    judged = case["id"] in SCALING_CASES and n == SCALING_THREADS and dtype == JUDGED_DTYPE
                    value = impls.get(default)
                    rows.append({"case": case["id"], "dtype": dtype, "pass": pass_, "threads": n, "impls": impls,
                                 "default": default, "speedup": value, "target": SCALING_TARGET if judged else None,
                                 "status": verdict(value, SCALING_TARGET, at_most=False) if judged else None})
    return rows


def _memory_verdicts(memory):
    memory = json.loads(json.dumps(memory))  # leave the raw section untouched
    slack = 2**20  # interpreter bookkeeping traced next to the arrays
    for entry in memory["backends"].values():
        if "peak_bytes" not in entry:
            continue
        cache = max(entry["retained_bytes"] - entry["output_bytes"], 0)
        bound = entry["output_bytes"] + cache + memory["workspace_limit_bytes"]
        entry["cache_bytes"] = cache
        entry["bound_bytes"] = bound
        if entry["retained_bytes"] < 0.9 * entry["output_bytes"]:
            # The output itself was not traced: the backend allocates outside NumPy's
            # allocator (Numba's runtime), which tracemalloc cannot see.
            entry["status"] = "untraced"
        else:
            entry["status"] = verdict(entry["peak_bytes"], bound + slack)
    return memory


def _load_rows(load):
    """Per case and pass under load: fastnn at 1 and 2 threads, PyTorch at 2, and the
    two ratios the targets judge."""
    if not load or "timings" not in load:
        return []
    timings = index_by(load["timings"], "case", "pass", "impl", "threads")
    n = load.get("threads", LOAD_THREADS)
    rows = []
    for case_id in dict.fromkeys(t["case"] for t in load["timings"]):
        for pass_ in PASSES:
            one = timings.get((case_id, pass_, "fastnn", 1), {})
            many = timings.get((case_id, pass_, "fastnn", n), {})
            theirs = timings.get((case_id, pass_, TORCH, n), {})
            self_ratio = ratio(many.get("median_s"), one.get("median_s"))
            torch_ratio = ratio(many.get("median_s"), theirs.get("median_s"))
            errors = {k: e.get("error") or e.get("skipped") for k, e in
                      (("fastnn 1", one), (f"fastnn {n}", many), (f"torch {n}", theirs))
                      if e and "median_s" not in e}
            rows.append({"case": case_id, "pass": pass_, "threads": n, "backend": many.get("backend"),
                         "fastnn_1_s": one.get("median_s"), "fastnn_n_s": many.get("median_s"),
                         "torch_n_s": theirs.get("median_s"),
                         "self_ratio": self_ratio, "self_status": verdict(self_ratio, LOAD_SELF_TARGET),
                         "torch_ratio": torch_ratio,
                         "torch_status": verdict(torch_ratio, LOAD_TORCH_TARGET) if theirs else None,
                         **({"errors": errors} if errors else {})})
    return rows


def _targets(report, cases):
    """Every target that this run can judge, one verdict per dtype, thread count and pass."""
    rows = []
    results = index_by(report["results"], "case", "dtype", "pass", "threads")
    threads = report["config"]["threads"]
    by_group = {}
    for case_id, case in cases.items():
        by_group.setdefault(case["group"], []).append(case_id)
    full = {g: [c.id for c in SUITE if c.group == g] for g in GROUP_TITLE}

    def ids_label(ids, group):
        return f"{ids[0]}–{ids[-1]}" if ids == full[group] and len(ids) > 1 else ",".join(ids)

    for dtype in report["config"]["dtypes"]:
        for n in threads:
            for pass_ in PASSES:
                for group, ids in by_group.items():
                    rows += _group_targets(group, ids, dtype, n, pass_, results, cases, ids_label)
                roof_ids = [i for i in ROOFLINE_CASES if i in cases]
                if roof_ids and dtype == JUDGED_DTYPE:
                    rows.append(_roofline_target(roof_ids, dtype, n, pass_, results))
            for group, ids in by_group.items():
                row = _default_backend_target(report, group, ids, dtype, n, results)
                if row:
                    rows.append(row)
            rows += _numpy_targets(report, dtype, n)
    rows += _scaling_targets(report)
    rows += _load_targets(report)
    memory = report.get("memory")
    if memory:
        for backend, entry in memory["backends"].items():
            if "status" in entry:
                rows.append({"target": f"memory, {memory['case']} batch {memory['batch']}, {backend}: "
                                       "peak ≤ output + cache + workspace",
                             "dtype": JUDGED_DTYPE, "threads": memory["threads"], "pass": "forward",
                             "value": entry["peak_bytes"], "limit": entry["bound_bytes"], "unit": "bytes",
                             "status": entry["status"], "worst": None})
    return rows


def _group_targets(group, ids, dtype, n, pass_, results, cases, ids_label):
    rows = []
    ratios = {i: results[(i, dtype, pass_, n)]["ratio"] for i in ids}
    label = f"{GROUP_TITLE[group]} {ids_label(ids, group)}"
    if group in GEOMEAN_LIMIT:
        limit = GEOMEAN_LIMIT[group]
        value = geomean(ratios.values()) if all(v is not None for v in ratios.values()) else None
        rows.append(_target(f"{label}: geometric mean ≤ {limit:g}", dtype, n, pass_, value, limit))
    judged = [i for i in ids if cases[i]["targets"].get(dtype) is not None]
    limits = {cases[i]["targets"][dtype] for i in judged}
    if len(limits) == 1:
        limit = limits.pop()
        measured = {i: ratios[i] for i in judged if ratios[i] is not None}
        value = max(measured.values()) if len(measured) == len(judged) else None
        worst = max(measured, key=measured.get) if value is not None else None
        rows.append(_target(f"{GROUP_TITLE[group]} {ids_label(judged, group)}: every case ≤ {limit:g}", dtype, n,
                            pass_, value, limit, worst=worst))
    else:
        for i in judged:
            limit = cases[i]["targets"][dtype]
            rows.append(_target(f"{GROUP_TITLE[group]} {i}: ≤ {limit:g}", dtype, n, pass_, ratios[i], limit))
    return rows


def _roofline_target(ids, dtype, n, pass_, results):
    pcts = {}
    for i in ids:
        row = results[(i, dtype, pass_, n)]
        pcts[i] = row["impls"].get(row["default"], {}).get("roofline_pct")
    value = min(pcts.values()) if all(v is not None for v in pcts.values()) else None
    worst = min(pcts, key=pcts.get) if value is not None else None
    return _target(f"conv2d {','.join(ids)}: ≥ {100 * ROOFLINE_FRACTION:.0f} % of SGEMM", dtype, n, pass_, value,
                   100 * ROOFLINE_FRACTION, at_most=False, unit="%", worst=worst)


def _default_backend_target(report, group, ids, dtype, n, results):
    """backend=None must be within DEFAULT_SLACK of the fastest backend, both passes."""
    slowdowns = {}
    for i in ids:
        for pass_ in PASSES:
            row = results[(i, dtype, pass_, n)]
            if row["fastest"] and "median_s" in row["impls"].get(row["default"], {}):
                slowdowns[f"{i} {PASS_LABEL[pass_]}"] = (row["impls"][row["default"]]["median_s"]
                                                          / row["impls"][row["fastest"]]["median_s"])
    default = report["defaults"].get(group)
    others = [b for b in report["config"]["backends"] if b != default]
    if not slowdowns or not others:
        return None
    worst = max(slowdowns, key=slowdowns.get)
    return _target(f"{GROUP_TITLE[group]}: backend=None ({default}) within {100 * (DEFAULT_SLACK - 1):.0f} % of "
                   "the fastest backend", dtype, n, "both", slowdowns[worst], DEFAULT_SLACK, unit="×", worst=worst)


def _numpy_targets(report, dtype, n):
    rows = []
    for group, limit in NUMPY_TARGET.items():
        judged = [r for r in report["numpy_results"] if r["group"] == group and r["dtype"] == dtype
                  and r["threads"] == n and r["target"] is not None]
        if not judged:
            continue
        values = {r["case"]: r["ratio"] for r in judged}
        value = max(values.values()) if all(v is not None for v in values.values()) else None
        worst = max(values, key=values.get) if value is not None else None
        rows.append(_target(f"{GROUP_TITLE[group]} {','.join(values)}: ≤ {limit:g} × NumPy (np.matmul)", dtype, n,
                            "forward", value, limit, worst=worst))
    return rows


def _scaling_targets(report):
    rows = []
    scaling = [r for r in report.get("thread_scaling", []) if r["target"] is not None]
    for pass_ in PASSES:
        judged = [r for r in scaling if r["pass"] == pass_]
        if judged:
            values = {r["case"]: r["speedup"] for r in judged}
            value = min(values.values()) if all(v is not None for v in values.values()) else None
            worst = min(values, key=values.get) if value is not None else None
            label = f"{','.join(values)}: speed-up 1 → {SCALING_THREADS} threads ≥ {SCALING_TARGET:g}×"
            rows.append(_target(label, JUDGED_DTYPE, SCALING_THREADS, pass_, value, SCALING_TARGET, at_most=False,
                                unit="×", worst=worst))
    return rows


def _load_targets(report):
    rows = []
    load = report.get("load_results") or []
    for pass_ in PASSES:
        judged = [r for r in load if r["pass"] == pass_]
        if not judged:
            continue
        ids, n = ",".join(r["case"] for r in judged), judged[0]["threads"]
        for key, limit, what in (("self_ratio", LOAD_SELF_TARGET, "its own 1-thread time"),
                                 ("torch_ratio", LOAD_TORCH_TARGET, f"PyTorch's {n}-thread time")):
            values = {r["case"]: r[key] for r in judged}
            value = max(values.values()) if all(v is not None for v in values.values()) else None
            worst = max(values, key=values.get) if value is not None else None
            rows.append(_target(f"under load, {ids}: fastnn at {n} threads ≤ {limit:g} × {what}", JUDGED_DTYPE, n,
                                pass_, value, limit, unit="×", worst=worst))
    return rows


def _target(name, dtype, threads, pass_, value, limit, at_most=True, unit="ratio", worst=None):
    return {"target": name, "dtype": dtype, "threads": threads, "pass": pass_, "value": value, "limit": limit,
            "unit": unit, "status": verdict(value, limit, at_most), "worst": worst}


# --- validation and JSON ----------------------------------------------------------------

def validate_report(report):
    """Raise ValueError when ``report`` lacks what the renderers and readers of
    ``--json`` rely on; return it otherwise."""
    def need(mapping, keys, where):
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise ValueError(f"benchmark report: {where} lacks {', '.join(missing)}")

    need(report, ("schema", "environment", "config", "defaults", "roofline", "cases", "timings", "reference",
                  "memory", "load", *DERIVED), "the report")
    if report["schema"] != SCHEMA:
        raise ValueError(f"benchmark report: schema {report['schema']!r}, expected {SCHEMA!r}")
    need(report["environment"], ("date", "fastnn", "python", "numpy", "torch", "cpu", "cpu_count", "blas",
                                 "backends"), "environment")
    need(report["config"], ("cases", "backends", "threads", "dtypes", "quick", "torch"), "config")
    for entry in report["roofline"]:
        need(entry, ("threads", "sgemm_gflops", "copy_gbps"), "a roofline entry")
    for entry in report["timings"]:
        need(entry, ("case", "dtype", "pass", "threads", "impl"), "a timing")
        if not any(k in entry for k in ("median_s", "skipped", "error")):
            raise ValueError("benchmark report: a timing has neither median_s nor skipped nor error")
    for entry in report["results"]:
        need(entry, ("case", "dtype", "pass", "threads", "impls", "torch_s", "default", "ratio", "target", "status"),
             "a result")
    for entry in report["numpy_results"]:
        need(entry, ("case", "dtype", "pass", "threads", "numpy_s", "fastnn_s", "ratio", "target", "status"),
             "a NumPy result")
    for entry in report["load_results"]:
        need(entry, ("case", "pass", "threads", "fastnn_1_s", "fastnn_n_s", "torch_n_s", "self_ratio",
                     "torch_ratio"), "a load result")
    for entry in report["targets"]:
        need(entry, ("target", "dtype", "threads", "pass", "value", "limit", "status"), "a target")
    return report


def save_json(report, path):
    with open(path, "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
        f.write("\n")


def load_json(path):
    with open(path) as f:
        raw = json.load(f)
    return validate_report(summarise(raw))
