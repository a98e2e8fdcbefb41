"""``fastnn-train DEMO`` / ``python -m fastnn.train DEMO``: train, evaluate, summarise,
and optionally plot the loss curves and save the model."""
import argparse
import importlib.util
import math
import os
import sys

from .data import MissingExtra
from .demos import DEMOS, DTYPES, OPTIMIZERS, Options

PROG = "fastnn-train"


def _have(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _positive_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} expects a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} expects a positive integer, got {text!r}")
        return value
    return parse


def _positive_float(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} expects a positive number, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{name} expects a positive number, got {text!r}")
        return value
    return parse


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed expects a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--seed expects a non-negative integer, got {text!r}")
    return value


def build_parser():
    lines = "\n".join(f"  {name:<10} {demo.summary}" for name, demo in DEMOS.items())
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one of the course's networks with fastnn on real data shipped inside installed "
                    "packages (no download), then print a summary: time, train loss, train and dev error "
                    "side by side with a bias/variance hint, test accuracy.\n\ndemos:\n" + lines)
    p.add_argument("demo", choices=list(DEMOS), metavar="DEMO", help=f"one of {', '.join(DEMOS)}")
    p.add_argument("--epochs", type=_positive_int("--epochs"), help="epochs (default: the demo's)")
    p.add_argument("--batch-size", type=_positive_int("--batch-size"), help="mini-batch size (default: the demo's)")
    p.add_argument("--lr", type=_positive_float("--lr"), help="learning rate (default: the demo's)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="adam, or sgd with momentum 0.9 (default: adam)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the split, the initial weights and the "
                                                         "shuffling (default 0)")
    p.add_argument("--threads", type=_positive_int("--threads"), help="fastnn's thread count")
    p.add_argument("--backend", help="fastnn backend for every op (cython, numba, reference; default: the "
                                     "fastest per op)")
    p.add_argument("--quick", action="store_true", help="fewer epochs (and examples): under a minute on 2 cores")
    p.add_argument("--plot", metavar="FILE.png", help="write the loss curves (needs matplotlib: fastnn[plot])")
    p.add_argument("--save", metavar="FILE.npz", help="save the trained model (Model.load reads it back)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="float32 (default) or float64")
    p.add_argument("--temperature", type=_positive_float("--temperature"), default=0.8,
                   help="char-lstm: sampling temperature (default 0.8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--search", type=_positive_int("--search"), metavar="N",
                   help="instead of one run: a random search of N trials over the learning rate (log scale) "
                        "and batch size on Dask, the best model kept (needs fastnn[dask])")
    p.add_argument("--search-results", metavar="FILE.jsonl",
                   help="with --search: record every finished trial here; a search started again skips them")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --search: a Dask scheduler (tcp://host:8786) instead of a local cluster")
    p.add_argument("--workers", type=_positive_int("--workers"),
                   help="with --search: local worker processes (default: one per core)")
    return p


# --- the summary -----------------------------------------------------------------------

def summary_rows(result):
    """(label, value) rows of the summary table."""
    rows = [("demo", result["demo"]),
            ("data", result["data"]),
            ("examples", "train {train:,} / dev {dev:,} / test {test:,}".format(**result["sizes"])),
            ("settings", "{optimizer}, lr {lr:g}, batch {batch_size}, {dtype}, {threads} thread(s), "
                         "backend {backend}".format(**{**result["settings"],
                                                       "backend": result["settings"]["backend"] or "auto"})),
            ("epochs", str(result["epochs"])),
            ("time", f"{result['time_s']:.1f} s"),
            ("train loss", f"{result['train_loss']:.4f}"),
            ("train error | dev error", f"{result['train_error']:.2%} | {result['dev_error']:.2%}"),
            ("bias / variance", result["hint"]),
            ("test accuracy", f"{result['test_accuracy']:.2%}")]
    if "perplexity" in result:
        rows += [("test loss per char", f"{result['per_char_loss']:.4f} nats "
                                        f"({result['per_char_loss'] / math.log(2):.3f} bits)"),
                 ("test perplexity", f"{result['perplexity']:.2f} (vocabulary {len(result['vocab'])})")]
    return rows


def render_plain(result):
    rows = summary_rows(result)
    width = max(len(label) for label, _ in rows)
    lines = [f"fastnn-train {result['demo']}: summary"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    if "sample" in result:
        temperature = result["settings"].get("temperature")
        lines += ["", "sample" + (f" (temperature {temperature:g})" if temperature is not None else "") + ":",
                  result["sample"]]
    return "\n".join(lines)


def render(result, out=None):
    """Print the summary: a rich table when rich is installed, plain text otherwise."""
    out = out or sys.stdout
    if not _have("rich"):
        print(render_plain(result), file=out)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.panel import Panel
    from rich.text import Text
    console = Console(file=out, width=max(100, Console(file=out).width))
    table = Table(title=f"fastnn-train {result['demo']}: summary", show_header=True)
    table.add_column("", style="bold")
    table.add_column("value")
    for label, value in summary_rows(result):
        table.add_row(label, Text(value))
    console.print(table)
    if "sample" in result:
        console.print(Panel(Text(result["sample"]), title="sample (temperature "
                                                          f"{result['settings']['temperature']:g})"))


def plot_curves(result, path):
    """Train (and dev) loss per epoch to a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = result["curves"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train_loss", "train loss"), ("dev_loss", "dev loss")):
        if curves.get(key):
            ax.plot(range(1, len(curves[key]) + 1), curves[key], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (cross-entropy)")
    ax.set_title(f"fastnn-train {result['demo']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    import fastnn
    if args.backend is not None and args.backend not in fastnn.available_backends():
        parser.error(f"--backend {args.backend!r} is not available; available: "
                     f"{', '.join(fastnn.available_backends())}")
    # refused before training, not after
    if args.plot and not _have("matplotlib"):
        print(f'{PROG}: --plot needs matplotlib, which is not installed: pip install "fastnn[plot]" '
              '(or, from a checkout, pip install ".[plot]")', file=sys.stderr)
        return 2
    for path, option in ((args.plot, "--plot"), (args.save, "--save")):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            parser.error(f"{option}: the folder of {path!r} does not exist")
    for path, option in ((args.search_results, "--search-results"),):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            parser.error(f"{option}: the folder of {path!r} does not exist")
    if args.search is None and (args.search_results or args.scheduler or args.workers):
        parser.error("--search-results, --scheduler and --workers go with --search N")
    options = Options(demo=args.demo, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, seed=args.seed, threads=args.threads, backend=args.backend,
                      quick=args.quick, dtype=args.dtype, progress=not args.no_progress,
                      temperature=args.temperature)
    if args.search is not None:
        return _search(args, options)
    from . import demos
    try:
        result = demos.run(options)
    except MissingExtra as exc:
        print(f"{PROG} {args.demo}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    result["settings"]["temperature"] = args.temperature
    render(result)
    if args.plot:
        plot_curves(result, args.plot)
        print(f"loss curves written to {args.plot}", file=sys.stderr)
    if args.save:
        result["model"].save(args.save)
        print(f"model saved to {args.save}", file=sys.stderr)
    return 0


def _search(args, options):
    """fastnn-train DEMO --search N: the trials on Dask, a table of them best first, the
    best model saved with --save."""
    if not _have("distributed"):
        print(f'{PROG}: --search needs Dask distributed, which is not installed: pip install "fastnn[dask]" '
              '(or, from a checkout, pip install ".[dask]")', file=sys.stderr)
        return 2
    import functools

    import fastnn
    from ..distributed.cli import search_demo
    from . import demos
    if options.backend is not None:
        fastnn.set_backend(options.backend)
    settings = options.resolved()
    try:
        split, _ = demos.load_data(args.demo, seed=args.seed, dtype=args.dtype)
    except MissingExtra as exc:
        print(f"{PROG} {args.demo}: {exc}", file=sys.stderr)
        return 2
    builder = functools.partial(demos.build_network, args.demo, dtype=args.dtype, classes=split.classes)
    result = search_demo(builder, split, args.search, epochs=settings["epochs"], optimizer=settings["optimizer"],
                         seed=args.seed, results=args.search_results, address=args.scheduler, workers=args.workers,
                         progress=not args.no_progress, max_train=settings["max_train"])
    if args.save:
        result.best_model.save(args.save)
        print(f"best model saved to {args.save}", file=sys.stderr)
    return 0
