"""``fastnn-bench`` / ``python -m fastnn.bench``: the parser and the command."""
import argparse
import importlib.util
import os
import sys
from dataclasses import replace

import fastnn

from . import e2e
from . import tier as tiers
from .render import PlainProgress, RichProgress, plot, render_markdown, render_rich, report_console
from .report import load_json, save_json, summarise
from .run import Config, run
from .suite import (GEOMEAN_LIMIT, LOAD_SELF_TARGET, LOAD_TORCH_TARGET, NUMPY_TARGET, QUICK, SUITE, describe,
                    parse_dtypes, parse_threads, select, select_backends)
from .timing import FULL_PLAN, QUICK_PLAN
from .workloads import load_torch


def _have(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m fastnn.bench",
        description="Time fastnn against PyTorch (when installed), plain NumPy and its own reference on the "
                    "suite of conv2d, pooling, bmm and LSTM cases, in float32 and float64, with roofline, thread, "
                    "memory and under-load checks.")
    p.add_argument("--quick", action="store_true",
                   help=f"a subset ({', '.join(QUICK)}) in float32 with shorter timing, no memory check and no "
                        "load case; under two minutes on 2 cores")
    p.add_argument("--cases", metavar="C1,P2,...",
                   help="cases to run: ids, group names (conv, pool, bmm, lstm), letters (C, P, B, L, N), 'load' "
                        "for the under-load case (default: all, the load case included), and E (or E1,E2,E3) "
                        "for the end-to-end training epochs, which only run when named")
    p.add_argument("--dtype", metavar="float32[,float64]",
                   help="dtypes to run the suite in (default: both; float32 with --quick)")
    p.add_argument("--isa", choices=tiers.ISAS,
                   help="CPU tier to run fastnn's kernels on (default: FASTNN_ISA, else the CPU's highest); below "
                        "the CPU's highest, PyTorch, the BLAS and Numba are limited to it too")
    p.add_argument("--backend", metavar="NAME[,NAME]", help="fastnn backends to time (default: all available)")
    p.add_argument("--threads", metavar="N[,N]",
                   help="thread counts, e.g. 1,2 (adds the thread speed-up table); 'all' = every core "
                        "(default: all)")
    p.add_argument("--json", metavar="FILE", help="write results and environment to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="draw the ratio chart (needs matplotlib)")
    p.add_argument("--markdown", action="store_true", help="print the report as Markdown tables")
    p.add_argument("--from-json", metavar="FILE", help="re-render a report saved with --json, measuring nothing")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-numpy", action="store_true", help="skip the comparison with plain NumPy")
    p.add_argument("--no-reference", action="store_true", help="skip the speed-up over the reference")
    p.add_argument("--no-memory", action="store_true", help="skip the conv2d memory check")
    p.add_argument("--repeat", type=int, metavar="N", help="timing rounds per measurement (default 7, quick 5)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    return p


def config_from_args(args, available=None):
    """A :class:`Config` from parsed arguments; ValueError on a bad selection."""
    available = fastnn.available_backends() if available is None else available
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.repeat is not None:
        if args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
        plan = replace(plan, repeat=args.repeat, min_repeat=min(plan.min_repeat, args.repeat))
    cases, load = select(args.cases, args.quick)
    return Config(cases=cases, backends=select_backends(args.backend, available),
                  threads=parse_threads(args.threads), dtypes=parse_dtypes(args.dtype, args.quick),
                  quick=args.quick, compare_torch=not args.no_torch, compare_numpy=not args.no_numpy,
                  reference=bool(cases) and not args.no_reference,
                  memory=bool(cases) and not (args.no_memory or args.quick), load=load,
                  isa=tiers.asked_isa(args.isa), plan=plan)


def tier_environment(option, environ=os.environ, top=None):
    """The environment this run must be re-executed with to run at the tier asked for
    (``--isa``, else FASTNN_ISA), or None when the current one will do. ValueError
    when ``--isa`` asks for more than the CPU has."""
    top = top or tiers.cpu_isa()
    asked = tiers.asked_isa(option, environ)
    if option and top and tiers.is_below(top, asked):
        raise ValueError(f"--isa {asked}: this CPU's highest tier is {top}")
    return tiers.reexec_environment(tiers.required_environment(asked, top), environ)


def reexec(env, argv, execve=os.execve):
    """Start this command afresh with ``env``: PyTorch, the BLAS and Numba read their
    CPU limits when loaded, and this process has loaded NumPy already. The new
    process imports this very fastnn, not one that the working directory may hold: the
    working directory that ``-c`` puts first on the path gives way to the folder this
    fastnn came from, or goes when that folder is on the path anyway."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    code = ("import sys; p = sys.argv.pop(1); sys.path[0:1] = [] if p in sys.path[1:] else [p]; "
            "from fastnn.bench.cli import main; sys.exit(main())")
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, [sys.executable, "-c", code, package_parent, *argv], env)


def main(argv=None):
    """The command: measure (or read) a report and print it; returns the exit status."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except BrokenPipeError:  # the reader (`| head`) left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit
        return 1
    except KeyboardInterrupt:  # Ctrl-C: what was started (the load process) is stopped by now
        print("fastnn-bench: interrupted", file=sys.stderr)
        return 130


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for case in SUITE:
            quick = " (quick)" if case.id in QUICK else ""
            targets = ", ".join(f"{dtype} ≤ {limit:g}" for dtype, limit in case.targets.items() if limit is not None)
            print(f"{case.id}  {case.op:<10} {describe(case)}  target {targets or '(group)'}{quick}")
        print("load  L1, L2 and C2 at 2 threads with one CPU kept busy (full run, or --cases load): "
              f"≤ {LOAD_SELF_TARGET:g} × fastnn's 1-thread time, ≤ {LOAD_TORCH_TARGET:g} × PyTorch's")
        for case in e2e.CASES.values():
            print(f"{case.id}  end-to-end {e2e.describe(case)}  target ≤ {e2e.TARGET_RATIO:g} × PyTorch "
                  "(only with --cases E)")
        print(f"Also: conv2d geometric mean ≤ {GEOMEAN_LIMIT['conv']:g} (float32 and float64); bmm forward "
              f"≤ {NUMPY_TARGET['bmm']:g} × np.matmul (float32 and float64)")
        return 0
    # Refuse before measuring for minutes, not after.
    if args.plot and not _have("matplotlib"):
        parser.error("--plot needs matplotlib: pip install 'fastnn[plot]' (or matplotlib)")
    use_rich = _have("rich") and not args.markdown
    end_to_end, args.cases = e2e.split_spec(args.cases)
    if end_to_end and not args.cases:
        # the epochs run at the tier asked for too, the libraries limited alike
        try:
            threads = parse_threads(args.threads)
            env = tier_environment(args.isa)
        except ValueError as exc:
            parser.error(str(exc))
        if env is not None:
            reexec(env, argv)
        return _end_to_end(args, end_to_end, threads)
    if args.from_json:
        report = load_json(args.from_json)
    else:
        # every argument is checked here, before a re-execution could hand a mistake
        # to a new process (and end this one, a test's included)
        try:
            config = config_from_args(args)
            env = tier_environment(args.isa)
        except ValueError as exc:
            parser.error(str(exc))
        if not config.backends:
            parser.error("no fast backend is available; build fastnn with `pip install .`")
        if env is not None:
            reexec(env, argv)
        torch = load_torch() if config.compare_torch else None
        progress = PlainProgress()
        if _have("rich"):
            from rich.console import Console
            console = Console(stderr=True)
            if console.is_terminal:  # a log file gets plain lines rather than a redrawn bar
                progress = RichProgress(console)
        report = summarise(run(config, progress, torch))
    if args.json:
        save_json(report, args.json)
    if use_rich:
        render_rich(report, report_console())
    else:
        print(render_markdown(report))
    if args.plot:
        if report["config"]["torch"] and report["cases"]:
            plot(report, args.plot)
        else:
            print("--plot: the ratio chart needs suite cases and the PyTorch comparison (pip install torch); "
                  "no chart drawn", file=sys.stderr)
    if args.json:
        print(f"results written to {args.json}", file=sys.stderr)
    if end_to_end:
        return _end_to_end(args, end_to_end, parse_threads(args.threads))
    return 0


def _end_to_end(args, case_ids, threads):
    """Cases E1-E3 (``--cases E``): their own table, after the suite's when both ran;
    ``--json`` gets FILE.e2e.json beside the suite's report (or FILE alone)."""
    import datetime
    import json
    torch = None if args.no_torch else load_torch()
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = e2e.run(case_ids, threads, torch, quick=args.quick,
                  progress=lambda message: print(f"fastnn-bench: {message}", file=sys.stderr, flush=True))
    out["environment"] = {"cpu": fastnn.cpu_info(), "fastnn": fastnn.__version__,
                          "torch": getattr(torch, "__version__", None),
                          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                          # a busy machine makes the 2-thread figures meaningless: say how busy it was
                          "loadavg_start": load_before,
                          "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if args.json:
        path = args.json if not args.cases else os.path.splitext(args.json)[0] + ".e2e.json"
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
        print(f"end-to-end results written to {path}", file=sys.stderr)
    print(e2e.render_markdown(out))
    return 0

