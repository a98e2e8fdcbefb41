"""Random hyperparameter search on Dask: each trial one task training a fastnn Model."""
import inspect
import json
import math
import numbers
import os
import sys
import time
import uuid

import numpy as np

from . import _cluster, _space, _wire

__all__ = ["search", "run_trial", "SearchResult", "trials"]

FIT_KEYS = ("batch_size", "lr", "optimizer", "epochs")


class SearchResult:
    """What search returns: ``best_model`` (a fastnn.nn.Model), ``best_params``,
    ``best_trial`` (its index), ``best_metrics``, ``trials`` (every finished trial's
    record, by index: trial, params, trial_seed, seed, metrics, time), ``metric`` and
    ``mode`` (how the best was chosen), ``resumed`` (trials read from the results file
    instead of run), ``resubmitted`` (trials submitted again because a dying worker took
    the only copy of the scattered data with it)."""

    def __init__(self, best_model, best_record, trials, metric, mode, resumed, resubmitted=0):
        self.best_model = best_model
        self.best_trial = best_record["trial"]
        self.best_params = dict(best_record["params"])
        self.best_metrics = dict(best_record["metrics"])
        self.trials = trials
        self.metric = metric
        self.mode = mode
        self.resumed = resumed
        self.resubmitted = resubmitted

    def __repr__(self):
        return (f"SearchResult({len(self.trials)} trials, best trial {self.best_trial}: "
                f"{self.metric}={self.best_metrics.get(self.metric)!r} with {self.best_params})")


# ---------------------------------------------------------------- one trial (runs in a worker)

def _build(build, params, trial_seed):
    takes_seed = True
    try:
        sig = inspect.signature(build)
        try:
            sig.bind(params, trial_seed)
        except TypeError:
            takes_seed = False
    except (TypeError, ValueError):  # builtins without a signature: try the one-argument form
        takes_seed = False
    out = build(dict(params), trial_seed) if takes_seed else build(dict(params))
    from ..nn.model import Model
    if isinstance(out, Model):
        fit_kwargs = {k: params[k] for k in FIT_KEYS if k in params}
        return out, fit_kwargs
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Model) and isinstance(out[1], dict):
        return out[0], dict(out[1])
    raise TypeError(f"fastnn.distributed.search: build(params) must return a fastnn.nn.Model or a pair "
                    f"(Model, fit_kwargs dict), got {type(out).__name__}")


def _json_number(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def run_trial(build, params, data, *, trial_seed, epochs=1, fit=None, return_model=True):
    """Train one trial here, in this process: ``build(params[, trial_seed])`` gives a
    Model (or (Model, fit_kwargs)); it is fit on data[0], data[1] for `epochs` epochs
    (shuffled by a generator seeded `trial_seed`), then evaluated on the validation pair
    data[2], data[3] when given. Returns {"metrics": {...}, "time": seconds, "model":
    npz bytes or None}. This is what each search task runs; it is public so that a
    search can be reproduced (or timed) one trial after another."""
    X, y = data[0], data[1]
    start = time.perf_counter()
    model, fit_kwargs = _build(build, params, trial_seed)
    kwargs = {"epochs": epochs, "optimizer": None if model.optimizer is not None else "adam"}
    kwargs.update(fit or {})
    kwargs.update(fit_kwargs)
    kwargs.update(rng=trial_seed, progress=False)
    history = model.fit(X, y, **kwargs)
    metrics = {}
    for key, values in history.history.items():
        if key in ("loss", "accuracy", "val_loss", "val_accuracy") and values:
            metrics[key] = _json_number(values[-1])
    if len(data) == 4:
        for key, value in model.evaluate(data[2], data[3]).items():
            metrics["val_" + key] = _json_number(value)
    elapsed = time.perf_counter() - start
    return {"metrics": metrics, "time": elapsed, "model": _wire.model_to_bytes(model) if return_model else None}


def _task(build, params, trial_seed, epochs, fit, index, *data):
    out = run_trial(build, params, data, trial_seed=trial_seed, epochs=epochs, fit=fit)
    out["trial"] = index
    return out


# ---------------------------------------------------------------- checks

def _check_data(fn, data):
    if isinstance(data, dict):
        keys = ("X", "y", "X_val", "y_val") if "X_val" in data else ("X", "y")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"{fn}: data as a dict needs keys X, y (and X_val, y_val), missing {missing}")
        data = tuple(data[k] for k in keys)
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 4):
        raise ValueError(f"{fn}: data must be (X, y) or (X, y, X_val, y_val), got "
                         f"{type(data).__name__}{' of length %d' % len(data) if isinstance(data, (tuple, list)) else ''}")
    arrays = []
    for name, a in zip(("X", "y", "X_val", "y_val"), data):
        a = np.asarray(a)
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"{fn}: data's {name} must hold examples along its first axis, got shape {a.shape}")
        arrays.append(a)
    for i in (0, 2)[: len(arrays) // 2]:
        if arrays[i].shape[0] != arrays[i + 1].shape[0]:
            raise ValueError(f"{fn}: data's X and y must hold as many examples, got shapes {arrays[i].shape} and "
                             f"{arrays[i + 1].shape}")
    return tuple(arrays)


def _check_int(fn, name, value, low):
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) or value < low:
        raise ValueError(f"{fn}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def trials(space, n_trials, seed=0):
    """[(index, params, trial_seed)] of the first n_trials trials of a search with this
    space and seed: what search runs, in a fixed order."""
    fn = "fastnn.distributed.trials"
    space = _space.check_space(fn, space)
    n_trials = _check_int(fn, "n_trials", n_trials, 1)
    seed = _check_int(fn, "seed", seed, 0)
    return [(i, _space.trial_params(space, seed, i), _space.trial_seed(seed, i)) for i in range(n_trials)]


# ---------------------------------------------------------------- results file

def _read_results(fn, path, space, seed):
    """{index: record} of the trials the file holds (finished trials of this search).
    A torn last line (a crash while writing) is ignored; a record of another search
    (another seed or space) is a ValueError."""
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue  # a torn last line (no newline: a crash in the middle of a write)
            raise ValueError(f"{fn}: results file {path!r} line {number} is not JSON: {line[:80]!r}") from None
        if not isinstance(record, dict) or not {"trial", "params", "metrics", "seed"} <= set(record):
            raise ValueError(f"{fn}: results file {path!r} line {number} is not a trial record "
                             f"(trial, params, metrics, seed): {line[:80]!r}")
        index = record["trial"]
        if record["seed"] != seed or not isinstance(index, int) or index < 0:
            raise ValueError(f"{fn}: results file {path!r} line {number} belongs to another search (seed "
                             f"{record['seed']!r}, trial {index!r}; this search has seed {seed}); give another "
                             f"results path")
        expected = _space.trial_params(space, seed, index)
        if record["params"] != expected:
            raise ValueError(f"{fn}: results file {path!r} line {number}: trial {index} has params "
                             f"{record['params']} but this search's space draws {expected}; the file belongs to "
                             f"another search (give another results path)")
        done[index] = record
    return done


def _drop_torn_tail(path):
    """Cut a last line without its newline (a write the crash interrupted) off the file,
    so the next record starts on a line of its own."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _append(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _best_path(results, index):
    return f"{results}.best-trial-{index}.npz"


# ---------------------------------------------------------------- progress

class _Progress:
    def __init__(self, mode, total, done, metric):
        self.mode, self.total, self.done, self.metric = mode, total, done, metric
        self.bar = None
        if mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), transient=False)
            self.task = self.bar.add_task("", total=total, completed=done)
            self.bar.start()

    def update(self, record, best):
        self.done += 1
        value = record["metrics"].get(self.metric)
        text = (f"best {self.metric} {best['metrics'].get(self.metric)!r:.8} (trial {best['trial']})"
                if best else "")
        if self.mode == "rich":
            self.bar.update(self.task, completed=self.done, description=text)
        elif self.mode == "plain":
            print(f"trial {record['trial']} ({self.done}/{self.total}) {self.metric} {value!r} "
                  f"params {record['params']} - {text}", file=sys.stdout, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def _progress_mode(fn, progress):
    if progress is False or progress is None:
        return None
    if progress is True:
        try:
            import rich.progress  # noqa: F401
            return "rich"
        except ImportError:
            return "plain"
    if progress in ("rich", "plain"):
        return progress
    raise ValueError(f"{fn}: progress must be True, False, 'rich' or 'plain', got {progress!r}")


# ---------------------------------------------------------------- search

def _score(record, metric, mode):
    value = record["metrics"].get(metric)
    if value is None or not math.isfinite(value):
        return -math.inf
    return value if mode == "max" else -value


def _better(a, b, metric, mode):
    """Whether record a beats record b (ties go to the lower trial index, so the best
    does not depend on the order trials finish in)."""
    if b is None:
        return True
    sa, sb = _score(a, metric, mode), _score(b, metric, mode)
    return sa > sb or (sa == sb and a["trial"] < b["trial"])


def search(build, space, data, *, n_trials, epochs=1, fit=None, metric=None, mode=None, client=None,
           address=None, results=None, seed=0, progress=True, retries=3, callback=None):
    """Random search: n_trials trials, trial i's hyperparameters drawn from `space` as a
    function of (seed, i) only, each trial one Dask task that runs
    ``build(params)`` (or ``build(params, trial_seed)``) -> Model or (Model, fit_kwargs),
    fits it on data[:2] and evaluates it on data[2:] (see run_trial).

    space: {name: uniform(lo, hi) | loguniform(lo, hi) | intuniform(lo, hi) | choice([...])}.
    When build returns only a Model, the params named batch_size, lr, optimizer, epochs
    go to Model.fit (optimizer defaults to "adam"); `fit` gives further fit keyword
    defaults (e.g. {"optimizer": "sgd"}).
    data: (X, y) or (X, y, X_val, y_val); scattered to the workers once (broadcast).
    metric: the metric that picks the best ("val_accuracy" when there is validation data
    and accuracy, else "val_loss", "accuracy" or "loss"); mode "max"/"min" (default:
    "min" for a loss, "max" otherwise). Ties go to the lower trial index.
    client / address: a distributed.Client, or a scheduler address; neither: the
    embedded LocalCluster (one one-thread worker per core).
    results: path of a JSON-lines file; every finished trial is appended as one line
    (trial, seed, trial_seed, params, metrics, time), and the best model so far is
    kept next to it as ``<results>.best-trial-<i>.npz``; a search started again with
    the same file skips the trials it holds.
    retries: how many times a trial that raised is run again; a trial on a worker
    that dies is rerun elsewhere by the scheduler, and when the dead worker held the
    only copy of the scattered data (Dask's active memory manager drops the copies no
    waiting task needs), the data is scattered again and the trial submitted again
    (same seed, same result; up to 5 times per trial).
    callback: called on the driver with each finished trial's record.
    Returns a SearchResult (best_model is a Model rebuilt from the .npz bytes)."""
    fn = "fastnn.distributed.search"
    if not callable(build):
        raise TypeError(f"{fn}: build must be a callable params -> Model (or (Model, fit_kwargs)), got "
                        f"{type(build).__name__}")
    space = _space.check_space(fn, space)
    n_trials = _check_int(fn, "n_trials", n_trials, 1)
    epochs = _check_int(fn, "epochs", epochs, 1)
    seed = _check_int(fn, "seed", seed, 0)
    retries = _check_int(fn, "retries", retries, 0)
    data = _check_data(fn, data)
    if fit is not None and not isinstance(fit, dict):
        raise TypeError(f"{fn}: fit must be a dict of Model.fit keyword arguments, got {type(fit).__name__}")
    bad_fit = sorted(set(fit or {}) & {"rng", "progress", "X", "y"})
    if bad_fit:
        raise ValueError(f"{fn}: fit must not set {bad_fit}: search sets the shuffling seed per trial and shows "
                         f"its own progress")
    if metric is None:
        metric = "val_accuracy" if len(data) == 4 else "accuracy"
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"{fn}: metric must be a metric name like 'val_accuracy' or 'val_loss', got {metric!r}")
    if mode is None:
        mode = "min" if metric.endswith("loss") else "max"
    if mode not in ("min", "max"):
        raise ValueError(f"{fn}: mode must be 'min' or 'max', got {mode!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"{fn}: callback must be callable(record), got {type(callback).__name__}")
    display_mode = _progress_mode(fn, progress)
    if results is not None:
        try:
            results = os.fspath(results)
        except TypeError:
            raise TypeError(f"{fn}: results must be a path (str or os.PathLike), got "
                            f"{type(results).__name__}") from None

    if results is not None:
        parent = os.path.dirname(os.path.abspath(results))
        if not os.path.isdir(parent):
            raise ValueError(f"{fn}: results={results!r}: the directory {parent!r} does not exist")
    planned = [(i, _space.trial_params(space, seed, i), _space.trial_seed(seed, i)) for i in range(n_trials)]
    done = _read_results(fn, results, space, seed) if results is not None else {}
    if results is not None:
        _drop_torn_tail(results)
    done = {i: r for i, r in done.items() if i < n_trials}
    resumed = len(done)
    best = None
    for record in done.values():
        if _better(record, best, metric, mode):
            best = record
    best_bytes = None
    if best is not None and os.path.exists(_best_path(results, best["trial"])):
        with open(_best_path(results, best["trial"]), "rb") as f:
            best_bytes = f.read()
    todo = [t for t in planned if t[0] not in done]
    if best is not None and best_bytes is None:
        # the best finished trial's weights were not kept: train it again (same seed, same weights)
        todo.append(next(t for t in planned if t[0] == best["trial"]))

    records = dict(done)
    resubmitted = 0
    display = _Progress(display_mode, n_trials, resumed, metric) if display_mode else None
    try:
        if todo:
            c = _cluster.get_client(fn, client, address)
            from distributed import as_completed
            run = _Submitter(c, build, epochs, fit, retries, data)
            try:
                pending = as_completed([run.submit(t) for t in todo], with_results=True, raise_errors=False)
                for future, out in pending:
                    t = run.trial_of(future)
                    if future.status == "error":
                        typ, exc, tb = out  # the trial raised (after its retries), or Dask gave up on it
                        raise exc.with_traceback(tb)
                    if future.status != "finished" or isinstance(out, BaseException):
                        # cancelled: a worker died with the only copy of the scattered data
                        # (or of the trial's result); scatter the data again, run the trial again
                        pending.add(run.again(fn, future, t, out))
                        continue
                    i = out["trial"]
                    params, tseed = planned[i][1], planned[i][2]
                    model_bytes = out["model"]
                    run.done(future)
                    if i in records:  # the best of an earlier run, trained again for its weights
                        if best is not None and best["trial"] == i:
                            best_bytes = model_bytes
                        continue
                    record = {"trial": i, "seed": seed, "trial_seed": tseed, "params": params,
                              "metrics": out["metrics"], "time": out["time"]}
                    records[i] = record
                    if results is not None:
                        _append(results, record)
                    if _better(record, best, metric, mode):
                        old = best
                        best, best_bytes = record, model_bytes
                        if results is not None:
                            _save_best(results, i, model_bytes, old)
                    if display:
                        display.update(record, best)
                    if callback is not None:
                        callback(dict(record))
            finally:
                resubmitted = run.resubmitted
                run.close()
    finally:
        if display:
            display.close()
    if best is not None and results is not None and best_bytes is not None \
            and not os.path.exists(_best_path(results, best["trial"])):
        _save_best(results, best["trial"], best_bytes, None)
    trials_list = [records[i] for i in sorted(records)]
    best_model = _wire.model_from_bytes(best_bytes)
    return SearchResult(best_model, best, trials_list, metric, mode, resumed, resubmitted)


# Times one trial may be submitted again because the scattered data it needed was lost
# with a worker, before search gives up (each one needs a worker to die).
_DATA_LOSSES = 5


class _Submitter:
    """The trial tasks of one search and the data they read. The data is scattered to
    every worker, but Dask's active memory manager drops the replicas no waiting task
    needs: once the last trials are running, the only copy may be on the worker that
    runs one of them. When that worker dies the scheduler forgets the data (it cannot
    compute it again) and cancels the tasks that needed it; again() scatters the
    driver's arrays once more (once per loss: trials of an older scattering reuse the
    new one) and submits the trial again, under a new key, with the same seed."""

    def __init__(self, client, build, epochs, fit, retries, data):
        self.client, self.build, self.epochs, self.fit, self.retries = client, build, epochs, fit, retries
        self.arrays = list(data)
        self.token = uuid.uuid4().hex[:8]
        self.generation = 0
        self.shared = client.scatter(self.arrays, broadcast=True, hash=False)
        self.futures = {}      # key -> (future, trial, generation)
        self.submissions = {}  # trial index -> times submitted
        self.resubmitted = 0

    def submit(self, t):
        i, params, tseed = t
        n = self.submissions[i] = self.submissions.get(i, 0) + 1
        key = f"fastnn-trial-{i}-{self.token}" + (f"-{n}" if n > 1 else "")
        future = self.client.submit(_task, self.build, params, tseed, self.epochs, self.fit, i, *self.shared,
                                    retries=self.retries, pure=False, key=key)
        self.futures[future.key] = (future, t, self.generation)
        return future

    def trial_of(self, future):
        return self.futures[future.key][1]

    def done(self, future):
        self.futures.pop(future.key, None)
        future.release()

    def again(self, fn, future, t, error):
        _, _, generation = self.futures.pop(future.key)
        future.release()
        i = t[0]
        if self.submissions[i] > _DATA_LOSSES:
            raise RuntimeError(f"{fn}: trial {i} lost its scattered data {self.submissions[i]} times (a worker "
                               f"holding the only copy died each time); last: {type(error).__name__}: "
                               f"{error}") from (error if isinstance(error, BaseException) else None)
        if generation == self.generation:
            old, self.shared = self.shared, self.client.scatter(self.arrays, broadcast=True, hash=False)
            self.generation += 1
            for f in old:
                f.release()
        self.resubmitted += 1
        return self.submit(t)

    def close(self):
        for future, _, _ in self.futures.values():
            future.release()
        for f in self.shared:
            f.release()
        self.futures, self.shared = {}, []


def _save_best(results, index, model_bytes, old):
    path = _best_path(results, index)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model_bytes)
    os.replace(tmp, path)
    if old is not None and old["trial"] != index:
        try:
            os.unlink(_best_path(results, old["trial"]))
        except OSError:
            pass
