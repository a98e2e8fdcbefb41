"""What ``fastnn-train DEMO --search N`` calls: a random search over a demo's learning
rate and batch size on Dask (the embedded LocalCluster, or a scheduler's address).

``fastnn.train.cli`` calls :func:`search_demo` with a builder of the demo's network
(a ``functools.partial`` of ``fastnn.train.demos.build_network``), the demo's data
split and the demo's epochs and optimizer; ``result.best_model`` is a
``fastnn.nn.Model`` (saved with ``--save``).
"""
import sys

from ._space import choice, loguniform

__all__ = ["search_demo", "DEFAULT_SPACE", "DemoBuild"]

DEFAULT_SPACE = {"lr": loguniform(1e-4, 1e-2), "batch_size": choice([16, 32, 64])}


class DemoBuild:
    """build(params, seed) for a demo: ``builder(seed=seed)`` gives the network (a
    fastnn.nn layer), trained with a softmax cross-entropy loss and `optimizer` at the
    trial's lr and batch_size. A class at module level, so Dask sends it to the
    workers by reference (the builder must be importable there too, e.g. a
    functools.partial of a module function)."""

    def __init__(self, builder, optimizer="adam"):
        self.builder = builder
        self.optimizer = optimizer

    def __call__(self, params, seed):
        from ..nn import SoftmaxCrossEntropy
        from ..nn.model import Model
        model = Model(self.builder(seed=seed), SoftmaxCrossEntropy())
        kwargs = {"optimizer": params.get("optimizer", self.optimizer)}
        for key in ("lr", "batch_size", "epochs"):
            if key in params:
                kwargs[key] = params[key]
        return model, kwargs


def _split(data):
    if all(hasattr(data, a) for a in ("X_train", "y_train", "X_dev", "y_dev")):
        return data.X_train, data.y_train, data.X_dev, data.y_dev
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        return tuple(data)
    raise ValueError(f"fastnn.distributed.cli.search_demo: data must be a Split (X_train, y_train, X_dev, y_dev) "
                     f"or a tuple (X, y[, X_dev, y_dev]), got {type(data).__name__}")


def search_demo(builder, data, n_trials, *, epochs=3, space=None, optimizer="adam", seed=0, results=None,
                address=None, client=None, workers=None, progress=True, max_train=None, out=None):
    """Run ``n_trials`` random trials of a demo (each: a fresh network from
    ``builder(seed=trial_seed)``, trained `epochs` epochs with `optimizer`, the lr and
    batch size drawn from `space` (default DEFAULT_SPACE: lr log-uniform in
    [1e-4, 1e-2], batch size 16/32/64), scored by dev accuracy), print a table of the
    trials, best first, to `out` (default stdout) and return the SearchResult.

    data: a fastnn.train Split (X_train, y_train, X_dev, y_dev) or a tuple.
    address: a Dask scheduler ("tcp://host:8786"); workers: the number of local worker
    processes (default one per core) when no address or client is given.
    results: a JSON-lines file that makes the search resumable. max_train keeps the
    first max_train training examples."""
    from . import _cluster
    from ._search import search
    out = sys.stdout if out is None else out
    X, y, *dev = _split(data)
    if max_train is not None:
        X, y = X[:max_train], y[:max_train]
    own = None
    if client is None and address is None and workers is not None:
        own = _cluster.local_cluster(workers)
        client = own[1]
    try:
        result = search(DemoBuild(builder, optimizer), DEFAULT_SPACE if space is None else space, (X, y, *dev),
                        n_trials=n_trials, epochs=epochs, client=client, address=address, results=results,
                        seed=seed, progress=progress)
    finally:
        if own is not None:
            own[1].close()
            own[0].close()
    key = result.metric
    sign = -1 if result.mode == "max" else 1
    ranked = sorted(result.trials, key=lambda r: (sign * (r["metrics"].get(key) or 0.0), r["trial"]))
    names = sorted(ranked[0]["params"])
    print(f"{'trial':>5}  " + "  ".join(f"{n:>12}" for n in names) + f"  {key:>12}  {'time':>7}", file=out)
    for r in ranked:
        cells = "  ".join(f"{r['params'][n]:>12.4g}" if isinstance(r['params'][n], float) else f"{r['params'][n]!s:>12}"
                          for n in names)
        value = r["metrics"].get(key)
        print(f"{r['trial']:>5}  {cells}  {'-' if value is None else format(value, '.4f'):>12}  "
              f"{r.get('time', 0.0):>6.1f}s", file=out)
    print(f"best: trial {result.best_trial} {key} {result.best_metrics.get(key)} with {result.best_params}", file=out)
    return result
