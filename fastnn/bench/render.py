"""The report as people read it: Markdown (for a README), rich tables (a terminal),
the ratio chart, and the progress of a run."""
import sys

from .report import index_by
from .run import Progress, threads_label
from .suite import DEFAULT_SLACK, GROUP_TITLE, LOAD_SELF_TARGET, LOAD_TORCH_TARGET, PASS_LABEL, PASSES, TORCH
from .tier import tier_lines

# --- formatting -------------------------------------------------------------------------


def fmt_time(seconds):
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs" if seconds >= 1e-5 else f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(value):
    return "—" if value is None else f"{value:.2f}×"


def fmt_factor(value):
    if value is None:
        return "—"
    return f"{value:,.0f}×" if value >= 100 else f"{value:.1f}×"


def fmt_bytes(nbytes):
    return "—" if nbytes is None else f"{nbytes / 2**20:.1f} MiB"


def fmt_limit(limit):
    return "—" if limit is None else f"≤ {limit:g}"


def fmt_throughput(impl, group):
    """GFLOP/s (GB/s for pooling) and the % of the roofline, e.g. "412 (78 %)"."""
    if not impl or "median_s" not in impl:
        return "—"
    value = impl.get("gbps") if group == "pool" else impl.get("gflops")
    if value is None:
        return "—"
    text = f"{value:.3g}" if value < 100 else f"{value:.0f}"
    pct = impl.get("roofline_pct")
    return text if pct is None else f"{text} ({pct:.0f} %)"


def fmt_target_value(row):
    value = row["value"]
    if value is None:
        return "—"
    if row.get("unit") == "%":
        text = f"{value:.0f} %"
    elif row.get("unit") == "bytes":
        text = f"{fmt_bytes(value)} (bound {fmt_bytes(row['limit'])})"
    elif row.get("unit") == "×":
        text = f"{value:.2f}×"
    else:
        text = f"{value:.2f}"
    return f"{text} ({row['worst']})" if row.get("worst") else text


def impl_cell(impl):
    """(text, outcome) of one implementation in the suite table; outcome is "win",
    "loss" or None (no comparison, skipped, failed)."""
    if impl is None:
        return "—", None
    if "median_s" not in impl:
        return ("no kernel" if "skipped" in impl else "error"), None
    text = fmt_time(impl["median_s"])
    r = impl.get("ratio")
    if r is None:
        return text, None
    return f"{text} · {fmt_ratio(r)}", ("win" if r < 1 else "loss")


def ratio_cell(value):
    return fmt_ratio(value), (None if value is None else "win" if value < 1 else "loss")


def status_cell(status):
    return (status or "—"), status


# --- the parts of the report ------------------------------------------------------------

def header_lines(report):
    env = report["environment"]
    libraries = env.get("blas") or []
    blas = next((b for b in libraries if b.get("owner") == "scipy"), libraries[0] if libraries else None)
    blas = f"{blas.get('internal_api')} {blas.get('version')}" if blas else "unknown"
    if not env.get("torch"):
        torch = "PyTorch not installed"
    else:
        torch = f"PyTorch {env['torch']}" + ("" if report["config"]["torch"] else " (not compared)")
    config = report["config"]
    lines = [
        f"fastnn {env['fastnn']} · {env['date'][:16].replace('T', ' ')} · {env['cpu']} "
        f"({env['cpu_count']} CPUs) · threads {', '.join(map(str, config['threads']))} · "
        f"{', '.join(config.get('dtypes', ['float32']))}",
        f"Python {env['python']} · NumPy {env['numpy']} · SciPy {env.get('scipy')} · Numba {env.get('numba')} "
        f"· BLAS {blas} (SciPy's: the roofline's GEMM and numba's compiled products; the cython kernels call none) · {torch}",
    ]
    if env.get("tier"):
        lines += tier_lines(env["tier"])
    roofs = []
    for r in report["roofline"]:
        if r.get("sgemm_gflops") and r.get("copy_gbps"):
            dgemm = f", DGEMM {r['dgemm_gflops']:.0f} GFLOP/s" if r.get("dgemm_gflops") else ""
            roofs.append(f"{threads_label(r['threads'])}: SGEMM {r['sgemm_gflops']:.0f} GFLOP/s{dgemm}, "
                         f"copy {r['copy_gbps']:.1f} GB/s")
    if roofs:
        lines.append("Roofline — " + "; ".join(roofs))
    defaults = ", ".join(f"{GROUP_TITLE[g]} {b}" for g, b in report["defaults"].items())
    lines.append(f"Default backend (backend=None): {defaults}")
    for name, reason in (env.get("unavailable_backends") or {}).items():
        lines.append(f"Backend {name} unavailable: {reason}")
    return lines


LEGEND = ("Cells: median time · ratio = fastnn time / PyTorch time in the same dtype (lower is better; below 1 "
          "fastnn wins). Throughput of the default backend: GFLOP/s (conv, bmm, LSTM) or GB/s (pooling), in % of "
          "the SGEMM (float32), DGEMM (float64) or copy roofline at the same thread count. Status: the default "
          "backend's ratio against the case's target (— where only a group target applies).")
THROUGHPUT = "GFLOP/s · GB/s (% roof)"


def suite_sections(report):
    """(dtype, threads) of every suite table, in report order; none without cases."""
    if not report["cases"]:
        return []
    return [(dtype, n) for dtype in report["config"].get("dtypes", ["float32"]) for n in report["config"]["threads"]]


def table_columns(report):
    return ["case", "shape", "pass", "PyTorch", *report["config"]["backends"], "default", THROUGHPUT,
            "target", "status"]


def table_rows(report, threads, dtype="float32"):
    """The suite table of one dtype at one thread count, as rows of (text, outcome) cells."""
    backends = report["config"]["backends"]
    no_torch = "not compared" if report["environment"].get("torch") else "not installed"
    cases = {c["id"]: c for c in report["cases"]}
    rows = []
    for row in report["results"]:
        if row["threads"] != threads or row["dtype"] != dtype:
            continue
        case = cases[row["case"]]
        first = row["pass"] == PASSES[0]
        cells = [(row["case"] if first else "", None), (case["shape"] if first else "", None),
                 (PASS_LABEL[row["pass"]], None)]
        torch_impl = row["impls"].get(TORCH)
        cells.append((fmt_time(torch_impl.get("median_s")) if torch_impl and "median_s" in torch_impl
                      else (no_torch if not report["config"]["torch"] else impl_cell(torch_impl)[0]), None))
        cells += [impl_cell(row["impls"].get(b)) for b in backends]
        default = row["default"] or "—"
        if row["fastest"] and row["default"] != row["fastest"] and "median_s" in row["impls"].get(row["default"], {}):
            slower = row["impls"][row["default"]]["median_s"] / row["impls"][row["fastest"]]["median_s"]
            if slower > DEFAULT_SLACK:
                default = f"{default} ({row['fastest']} faster)"
        cells.append((default, None))
        cells.append((fmt_throughput(row["impls"].get(row["default"]), case["group"]), None))
        cells.append((fmt_limit(row["target"]), None))
        cells.append(status_cell(row["status"]))
        rows.append(cells)
    return rows


NUMPY_COLUMNS = ["case", "shape", "dtype", "threads", "pass", "NumPy", "fastnn (default)", "ratio", "target",
                 "status"]
NUMPY_TITLE = "Against plain NumPy (ratio = fastnn time / NumPy time)"
NUMPY_LEGEND = ("NumPy as a user would write it: np.matmul for bmm (fwd+bwd: the two gradient products as well), "
                "a reshape for pooling windows that tile the image, one matmul per step for the LSTM (fwd+bwd: "
                "backward through time the same way). Only bmm forward is judged.")


def numpy_rows(report):
    cases = {c["id"]: c for c in report["cases"]}
    rows = []
    for row in report.get("numpy_results", []):
        first = row["pass"] == PASSES[0]
        rows.append([(row["case"] if first else "", None), (cases[row["case"]]["shape"] if first else "", None),
                     (row["dtype"], None), (str(row["threads"]), None), (PASS_LABEL[row["pass"]], None),
                     (fmt_time(row["numpy_s"]) if row["numpy_s"] else "error", None),
                     (f"{fmt_time(row['fastnn_s'])} ({row['default']})", None), ratio_cell(row["ratio"]),
                     (fmt_limit(row["target"]), None), status_cell(row["status"])])
    return rows


def load_columns(report):
    n = (report.get("load") or {}).get("threads", 2)
    return ["case", "pass", "fastnn, 1 thread", f"fastnn, {n} threads", f"PyTorch, {n} threads",
            f"{n} / 1 thread (≤ {LOAD_SELF_TARGET:g})", f"vs PyTorch (≤ {LOAD_TORCH_TARGET:g})", "status"]


def load_title(report):
    load = report.get("load") or {}
    cpu = load.get("busy_cpu")
    where = f"CPU {cpu} kept busy" + ("" if load.get("pinned", True) else " (unpinned)") if cpu is not None \
        else "one CPU kept busy"
    return f"Under load ({where} by another process; float32, default backend)"


def load_rows(report):
    rows = []
    for row in report.get("load_results", []):
        first = row["pass"] == PASSES[0]
        statuses = [s for s in (row["self_status"], row["torch_status"]) if s]
        status = "miss" if "miss" in statuses else "n/a" if "n/a" in statuses or not statuses else "pass"
        rows.append([(row["case"] if first else "", None), (PASS_LABEL[row["pass"]], None),
                     (fmt_time(row["fastnn_1_s"]), None), (fmt_time(row["fastnn_n_s"]), None),
                     (fmt_time(row["torch_n_s"]), None),
                     (fmt_ratio(row["self_ratio"]), row["self_status"]),
                     (fmt_ratio(row["torch_ratio"]), row["torch_status"]), (status, status)])
    return rows


def speedup_rows(report):
    rows = []
    for row in report["speedups"]:
        cells = [row["case"], row["shape"], PASS_LABEL[row["pass"]], fmt_time(row["reference_s"])]
        for b in report["config"]["backends"]:
            impl = row["impls"].get(b, {})
            cells.append(f"{fmt_time(impl.get('median_s'))} · {fmt_factor(impl.get('speedup'))}"
                         if impl.get("speedup") else "—")
        rows.append(cells)
    return rows


def scaling_columns(report):
    return ["case", "dtype", "pass", "threads", *report["config"]["backends"], "PyTorch", "target", "status"]


def scaling_rows(report):
    rows = []
    for row in report["thread_scaling"]:
        cells = [row["case"], row.get("dtype", "float32"), PASS_LABEL[row["pass"]], f"1 → {row['threads']}"]
        cells += [fmt_ratio(row["impls"].get(b)) for b in [*report["config"]["backends"], TORCH]]
        cells.append(f"≥ {row['target']:g}×" if row["target"] else "")
        cells.append(row["status"] or "")
        rows.append(cells)
    return rows


MEMORY_COLUMNS = ["backend", "peak traced", "output", "cache kept", "workspace limit", "bound", "status"]


def memory_rows(report):
    memory = report.get("memory")
    if not memory:
        return []
    rows = []
    for backend, entry in memory["backends"].items():
        if "peak_bytes" not in entry:
            rows.append([backend, "—", "—", "—", "—", "—", entry.get("skipped") and "no kernel" or "error"])
            continue
        rows.append([backend, fmt_bytes(entry["peak_bytes"]), fmt_bytes(entry["output_bytes"]),
                     fmt_bytes(entry.get("cache_bytes")), fmt_bytes(memory["workspace_limit_bytes"]),
                     fmt_bytes(entry.get("bound_bytes")), entry.get("status", "—")])
    return rows


TARGET_COLUMNS = ["target", "dtype", "threads", "pass", "measured (worst case)", "status"]


def target_rows(report):
    return [[row["target"], row.get("dtype") or "", threads_label(row["threads"]), PASS_LABEL[row["pass"]],
             fmt_target_value(row), row["status"]] for row in report["targets"]]


def memory_title(report):
    m = report["memory"]
    return f"Memory: conv2d_forward on {m['case']} with batch {m['batch']} ({m['shape']}, float32)"


# --- Markdown ---------------------------------------------------------------------------

def _md_table(columns, rows):
    def clean(text):
        return str(text).replace("|", "\\|")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_bold(rows):
    """Cells of (text, outcome) as Markdown: wins and misses in bold."""
    return [[f"**{text}**" if outcome in ("win", "miss") else text for text, outcome in row] for row in rows]


def render_markdown(report):
    """The whole report as Markdown (for a README)."""
    legend = LEGEND + " Bold: fastnn faster than PyTorch, or a missed target."
    out = ["\n".join(f"{line}  " for line in header_lines(report)), "", legend, ""]
    for dtype, n in suite_sections(report):
        out += [f"#### {dtype}, {threads_label(n)}", "",
                _md_table(table_columns(report), _md_bold(table_rows(report, n, dtype))), ""]
    if report.get("numpy_results"):
        out += [f"#### {NUMPY_TITLE}", "", NUMPY_LEGEND, "", _md_table(NUMPY_COLUMNS, _md_bold(numpy_rows(report))),
                ""]
    load = report.get("load")
    if load and load.get("skipped"):
        out += ["#### Under load", "", f"Skipped: {load['skipped']}.", ""]
    elif report.get("load_results"):
        out += [f"#### {load_title(report)}", "", _md_table(load_columns(report), _md_bold(load_rows(report))), ""]
    if report["targets"]:
        rows = [[*r[:-1], f"**{r[-1]}**" if r[-1] == "miss" else r[-1]] for r in target_rows(report)]
        out += ["#### Targets", "", _md_table(TARGET_COLUMNS, rows), ""]
    if report["speedups"]:
        out += ["#### Speed-up over the reference (scaled-down shapes, float32, 1 thread)", "",
                _md_table(["case", "shape", "pass", "reference", *report["config"]["backends"]],
                          speedup_rows(report)), ""]
    if report["thread_scaling"]:
        out += ["#### Thread speed-up", "", _md_table(scaling_columns(report), scaling_rows(report)), ""]
    if report.get("memory"):
        out += [f"#### {memory_title(report)}", "", _md_table(MEMORY_COLUMNS, memory_rows(report)), ""]
    return "\n".join(out)


# --- rich -------------------------------------------------------------------------------

_STYLE = {"win": "bold green", "loss": "red", "pass": "green", "miss": "bold red", "untraced": "yellow",
          "n/a": "dim"}


def render_rich(report, console):
    """The report as rich tables: wins green, losses red, misses bold red."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def styled(text, outcome=None):
        return Text(str(text), style=_STYLE.get(outcome, ""))

    def table(title, columns, right=()):
        t = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in columns:
            t.add_column(col, justify="right" if col in right else "left",
                         overflow="fold", no_wrap=col not in ("shape", "target"))
        return t

    def cells_table(title, columns, rows, right=()):
        t = table(title, columns, right)
        for cells in rows:
            t.add_row(*(styled(text, outcome) for text, outcome in cells))
        console.print(t)

    def simple(title, columns, rows, status_col=None):
        t = table(title, columns)
        for row in rows:
            t.add_row(*(styled(c, c if i == status_col else None) for i, c in enumerate(row)))
        console.print(t)

    for line in header_lines(report):
        console.print(line, highlight=False)
    console.print(Text(LEGEND + " Green: fastnn faster than PyTorch; red: slower.", style="dim"))
    for dtype, n in suite_sections(report):
        cells_table(f"fastnn vs PyTorch, {dtype}, {threads_label(n)}", table_columns(report),
                    table_rows(report, n, dtype), right=("PyTorch", *report["config"]["backends"], THROUGHPUT))
    if report.get("numpy_results"):
        console.print(Text(NUMPY_LEGEND, style="dim"))
        cells_table(NUMPY_TITLE, NUMPY_COLUMNS, numpy_rows(report), right=("NumPy", "fastnn (default)", "ratio"))
    load = report.get("load")
    if load and load.get("skipped"):
        console.print(f"Under load: skipped ({load['skipped']})", highlight=False)
    elif report.get("load_results"):
        cells_table(load_title(report), load_columns(report), load_rows(report))
    if report["targets"]:
        simple("Targets", TARGET_COLUMNS, target_rows(report), len(TARGET_COLUMNS) - 1)
    if report["speedups"]:
        simple("Speed-up over the reference (scaled-down shapes, float32, 1 thread)",
               ["case", "shape", "pass", "reference", *report["config"]["backends"]], speedup_rows(report))
    if report["thread_scaling"]:
        cols = scaling_columns(report)
        simple("Thread speed-up", cols, scaling_rows(report), len(cols) - 1)
    if report.get("memory"):
        simple(memory_title(report), MEMORY_COLUMNS, memory_rows(report), len(MEMORY_COLUMNS) - 1)


def report_console(file=None):
    """A rich console; wide when writing to a file or pipe, where nothing wraps."""
    from rich.console import Console
    console = Console(file=file)
    if not console.is_terminal:
        console = Console(file=file, width=180)
    return console


# --- the chart --------------------------------------------------------------------------

def plot(report, path):
    """A chart of the ratios to PyTorch, one panel per dtype, thread count and pass: a
    bar per case and backend, the win region shaded green, each case's target dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    backends = report["config"]["backends"]
    sections = suite_sections(report)
    case_ids = [c["id"] for c in report["cases"]]
    cases = {c["id"]: c for c in report["cases"]}
    results = index_by(report["results"], "case", "dtype", "pass", "threads")
    colors = dict(zip(backends, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig_height = (0.3 * len(case_ids) * max(len(backends), 1) + 1.5) * len(sections) + 1.2
    fig, axes = plt.subplots(len(sections), len(PASSES), squeeze=False, sharey=True, figsize=(12, fig_height))
    height = 0.8 / max(len(backends), 1)
    for row_axes, (dtype, n) in zip(axes, sections):
        for ax, pass_ in zip(row_axes, PASSES):
            values = []
            for k, backend in enumerate(backends):
                for i, case_id in enumerate(case_ids):
                    r = results[(case_id, dtype, pass_, n)]["impls"].get(backend, {}).get("ratio")
                    if r is None:
                        continue
                    y = i + (k - (len(backends) - 1) / 2) * height
                    ax.barh(y, r, height=height * 0.9, color=colors[backend])
                    ax.annotate(f"{r:.2f}", (r, y), xytext=(3, 0), textcoords="offset points", va="center",
                                fontsize="x-small")
                    values.append(r)
            for i, case_id in enumerate(case_ids):
                limit = cases[case_id]["targets"].get(dtype)
                if limit is not None:
                    ax.plot([limit] * 2, [i - 0.45, i + 0.45], color="black", linestyle=":", linewidth=1.2)
            low = min(values + [0.5]) / 1.5
            high = max(values + [2.0]) * 1.5
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
            ax.set_xlim(low, high)
            ax.axvspan(low, 1.0, color="tab:green", alpha=0.08)
            ax.axvspan(1.0, high, color="tab:red", alpha=0.06)
            ax.axvline(1.0, color="black", linewidth=1)
            ax.set_title(f"{PASS_LABEL[pass_]}, {dtype}, {threads_label(n)}")
            ax.set_xlabel("fastnn time / PyTorch time (log scale)")
    axes[0][0].set_yticks(range(len(case_ids)))
    axes[0][0].set_yticklabels(case_ids)
    axes[0][0].set_ylim(len(case_ids) - 0.5, -0.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[b]) for b in backends]
    handles.append(plt.Line2D([], [], color="black", linestyle=":"))
    fig.legend(handles, [*backends, "target"], loc="lower center", ncol=len(backends) + 1, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    env = report["environment"]
    tier = (env.get("tier") or {}).get("tier")
    fig.suptitle(f"fastnn {env['fastnn']} vs PyTorch {env.get('torch')}: below 1 fastnn is faster\n"
                 f"{env['cpu']}{f' · tier {tier}' if tier else ''} · {env['date'][:10]}")
    fig.tight_layout(rect=(0, 0.45 / fig_height, 1, 1 - 0.6 / fig_height))  # room for legend and title
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- progress ---------------------------------------------------------------------------

class RichProgress(Progress):
    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn
        self._bar = Bar(TextColumn("{task.description:<60}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
        self._task = None

    def start(self, total):
        self._bar.start()
        self._task = self._bar.add_task("starting", total=total)

    def step(self, label):
        self._bar.update(self._task, description=label)

    def advance(self):
        self._bar.advance(self._task)

    def stop(self):
        self._bar.stop()


class PlainProgress(Progress):
    """Progress lines on stderr, for when rich is not installed or output is a log."""

    def __init__(self, stream=sys.stderr):
        self._stream, self._done, self._total = stream, 0, 0

    def start(self, total):
        self._total = total

    def step(self, label):
        print(f"[{self._done + 1}/{self._total}] {label}", file=self._stream, flush=True)

    def advance(self):
        self._done += 1
