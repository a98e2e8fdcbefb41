"""What Model.fit shows while it trains: a rich progress bar, or plain lines.

``progress=True`` uses rich when it is installed (the ``bench`` extra has it): a live
bar per epoch with the running loss and accuracy, and one summary line per finished
epoch that stays on screen. The bar is transient, so a log file or a pipe (where rich
draws no live display) gets only the summary lines. Without rich, or with
``progress="plain"``, the same summary line is printed per epoch with ``print``.
``progress=False`` prints nothing.
"""
import sys

import numpy as np

_MODES = (True, False, "rich", "plain")


def rich_available():
    """Whether rich can be imported (a function so that tests can pretend it is not)."""
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        return False
    return True


def _fmt(value):
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.4f}"


def epoch_line(epoch, epochs, logs, n_batches):
    """`Epoch 3/10 - 17 batches - 0.52s - loss 0.1234 - accuracy 0.9612 - val_loss ...`."""
    parts = [f"Epoch {epoch + 1}/{epochs}", f"{n_batches} batches", f"{logs.get('time', 0.0):.2f}s"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key} {_fmt(logs[key])}")
    if "lr" in logs:
        parts.append(f"lr {logs['lr']:.3g}")
    return " - ".join(parts)


def _running(logs):
    parts = []
    for key in ("loss", "accuracy"):
        if logs.get(key) is not None:
            parts.append(f"{key} {_fmt(logs[key])}")
    return "  ".join(parts)


class _Silent:
    def start(self):
        pass

    def epoch_begin(self, epoch, n_batches):
        pass

    def batch_end(self, batch, running_logs):
        pass

    def epoch_end(self, epoch, logs, n_batches):
        pass

    def close(self):
        pass


class _Plain(_Silent):
    def __init__(self, epochs):
        self.epochs = epochs

    def epoch_end(self, epoch, logs, n_batches):
        print(epoch_line(epoch, self.epochs, logs, n_batches), file=sys.stdout, flush=True)


class _Rich(_Silent):
    def __init__(self, epochs):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.epochs = epochs
        # a Console without a file writes to whatever sys.stdout is at the time
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"),
                                 console=Console(), transient=True)
        self.task = None

    def start(self):
        self.progress.start()

    def epoch_begin(self, epoch, n_batches):
        description = f"Epoch {epoch + 1}/{self.epochs}"
        if self.task is None:
            self.task = self.progress.add_task(description, total=n_batches, metrics="")
        else:
            self.progress.reset(self.task, total=n_batches, description=description, metrics="")

    def batch_end(self, batch, running_logs):
        self.progress.update(self.task, advance=1, metrics=_running(running_logs))

    def epoch_end(self, epoch, logs, n_batches):
        self.progress.console.print(epoch_line(epoch, self.epochs, logs, n_batches), highlight=False, soft_wrap=True)

    def close(self):
        self.progress.stop()


def make(fn, progress, epochs):
    """The display for one fit call: progress is True (rich when available, else
    plain), "rich" (rich, an error when it is absent), "plain" or False."""
    if isinstance(progress, np.bool_):
        progress = bool(progress)
    if not any(progress is m or (isinstance(m, str) and progress == m) for m in _MODES):
        raise ValueError(f"{fn}: progress must be True, False, 'rich' or 'plain', got {progress!r}")
    if progress is False:
        return _Silent()
    if progress == "plain":
        return _Plain(epochs)
    if rich_available():
        return _Rich(epochs)
    if progress == "rich":
        raise ValueError(f"{fn}: progress='rich' needs the rich package (pip install rich, or the "
                         f"'bench' extra: pip install \"fastnn[bench]\"); progress=True falls back to plain lines")
    return _Plain(epochs)
