"""Synchronous data-parallel training on Dask: every batch is cut into one shard per
worker, each worker computes its shard's gradients with fastnn, the driver sums them
weighted by shard size (so the sum is the full batch's mean gradient), takes one
optimizer step and sends the new parameters with the next batch's tasks."""
import collections
import json
import threading
import uuid

import numpy as np

from . import _cluster

__all__ = ["DataParallel"]

_replicas = collections.OrderedDict()
_replicas_lock = threading.Lock()


def _replica(token, spec):
    """(network, loss, lock) rebuilt from the JSON spec once per worker process."""
    with _replicas_lock:
        entry = _replicas.get(token)
        if entry is not None:
            return entry
    from ..nn import from_config, loss_from_config
    cfg = json.loads(spec)
    entry = (from_config(cfg["network"]), loss_from_config(cfg["loss"]), threading.Lock())
    with _replicas_lock:
        entry = _replicas.setdefault(token, entry)
        while len(_replicas) > 4:
            _replicas.popitem(last=False)
    return entry


def _shard_step(spec, token, metric, dtype, params, buffers, X, y, idx):
    """One shard's forward and backward pass: (examples, loss, correct, predictions,
    grads, buffers) where loss and grads are the shard's means (the loss's own
    reduction)."""
    from ..nn.model import _correct
    network, loss, lock = _replica(token, spec)
    with lock:
        own_params, own_buffers = network.params, network.buffers
        for k, v in params.items():
            np.copyto(own_params[k], v)
        for k, v in buffers.items():
            np.copyto(own_buffers[k], v)
        xb, yb = X[idx], y[idx]
        if dtype is not None and xb.dtype.kind == "f" and xb.dtype != dtype:
            xb = xb.astype(dtype)
        network.train()
        y_pred = network.forward(xb, training=True)
        value = float(loss.forward(y_pred, yb))
        correct, count = _correct(metric, y_pred, yb) if metric is not None else (0, 0)
        network.backward(loss.backward())
        grads = {k: np.array(g, copy=True) for k, g in network.grads.items()}
        new_buffers = {k: np.array(b, copy=True) for k, b in network.buffers.items()}
        network.clear_cache()
    return len(idx), value, correct, count, grads, new_buffers


class DataParallel:
    """Synchronous data parallel training of a fastnn Model on a Dask cluster.

    ``DataParallel(model).fit(X, y, epochs=..., batch_size=..., optimizer=..., rng=...)``
    trains ``model`` in place, batch for batch as Model.fit would (the same
    permutation per epoch from the same generator, the same batches): each batch is
    split into one shard per worker (the cluster's worker count when fit starts), every
    shard's gradient is computed by a worker with fastnn, the driver forms
    sum(n_i * g_i) / n (the full batch's mean gradient), takes one optimizer step on
    the model's own parameters, and the next batch's tasks carry the new parameters.
    For a network without dropout or batch norm the parameters equal single-process
    training on the same batches, to rounding. Dropout draws its masks on the workers
    (other masks than one process would); batch norm normalises each shard by the
    shard's own statistics and its running averages are the shard-size-weighted mean
    of the shards' (as in data-parallel training without synchronised batch norm).

    X and y are scattered to every worker once per fit; each step's tasks are pure
    functions of the parameters and the batch's indices, so a task on a worker that
    dies is rerun on another and the result is unchanged.

    client / address: a distributed.Client or a scheduler address; neither: the
    embedded LocalCluster. retries: reruns of a shard task that raised.
    """

    def __init__(self, model, client=None, *, address=None, retries=3):
        fn = "fastnn.distributed.DataParallel"
        from ..nn.model import Model
        if not isinstance(model, Model):
            raise TypeError(f"{fn}: model must be a fastnn.nn.Model, got {type(model).__name__}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"{fn}: retries must be an integer >= 0, got {retries!r}")
        self.model = model
        self.client = _cluster.get_client(fn, client, address)
        self.retries = retries

    def __repr__(self):
        return f"DataParallel({self.model!r})"

    def _spec(self):
        network, loss = self.model.network, self.model.loss
        return json.dumps({"network": network.config(), "loss": loss.config()}, sort_keys=True)

    def fit(self, X, y, *, epochs, batch_size=64, optimizer=None, lr=None, shuffle=True, rng=None, progress=True,
            callbacks=(), initial_epoch=0):
        """Train like Model.fit (same arguments, minus validation_data and schedule...
        see the class doc); returns a History and records it in model.history."""
        fn = "DataParallel.fit"
        from ..nn import _progress
        model = self.model
        X, y, n, epochs, batch_size, initial_epoch, shuffle = model._check_batches(
            fn, X, y, epochs, batch_size, initial_epoch, shuffle)
        callbacks, generator = model._check_run(fn, callbacks, rng)
        display = _progress.make(fn, progress, epochs)
        optimizer = model._check_optimizer(fn, optimizer, lr)
        spec = self._spec()

        model.optimizer = optimizer
        model._rng = generator
        model.stop_training = False
        dtype = model._dtype()
        params = model.network.params
        buffers = model._buffers()
        c = self.client
        n_workers = max(1, len(c.scheduler_info()["workers"]))
        token = uuid.uuid4().hex
        X_f, y_f = c.scatter([X, y], broadcast=True, hash=False)
        modes = model._modes()
        state = {"step": 0}

        def run_batch(idx, acc):
            rows = np.arange(idx.start, idx.stop) if isinstance(idx, slice) else idx
            shards = [part for part in np.array_split(rows, n_workers) if len(part)]
            p_now = {k: np.array(v, copy=True) for k, v in params.items()}
            b_now = {k: np.array(v, copy=True) for k, v in buffers.items()}
            futures = [c.submit(_shard_step, spec, token, model._metric, dtype, p_now, b_now, X_f, y_f, part,
                                pure=False, retries=self.retries, key=f"fastnn-dp-{token[:8]}-{state['step']}-{j}")
                       for j, part in enumerate(shards)]
            outs = c.gather(futures)
            for f in futures:
                f.release()
            state["step"] += 1
            total = sum(o[0] for o in outs)
            grads = {k: sum(o[0] * o[4][k] for o in outs) / total if len(outs) > 1 else outs[0][4][k]
                     for k in outs[0][4]}
            if buffers:
                model._assign({}, {k: sum(o[0] * o[5][k] for o in outs) / total for k in outs[0][5]})
            loss = sum(o[0] * o[1] for o in outs) / total
            acc.examples += total
            acc.loss_sum += loss * total
            correct, count = sum(o[2] for o in outs), sum(o[3] for o in outs)
            acc.correct += correct
            acc.predictions += count
            optimizer.step(grads)
            return loss, (correct / count if count else None)

        try:
            return model._epochs(fn, n, epochs, initial_epoch, batch_size, shuffle, generator, optimizer,
                                 callbacks, display, run_batch)
        finally:
            model._put_back(modes)
            X_f.release()
            y_f.release()
