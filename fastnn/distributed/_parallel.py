"""Synchronous data-parallel training on Dask: every batch is cut into one shard per
worker, each worker computes its shard's gradients with fastnn, the driver sums them
weighted by shard size (so the sum is the full batch's mean gradient), takes one
optimizer step and sends the new parameters with the next batch's shards.

The shards run on Dask actors (one per worker, holding a replica of the network and
the training data), called directly by the client: a step costs one message to each
worker and one back, not a pass through the scheduler's task machinery (a round trip of
two tasks took 13-20 ms on a 2-core machine, two actor calls 3-7 ms). Parameters and
gradients travel as one contiguous buffer each. An actor whose worker dies is made
again on a surviving worker and its shard of the step is computed again there."""
import hashlib
import json
import time
import uuid

import numpy as np

from . import _cluster

__all__ = ["DataParallel"]

_ALIGN = 64
_POLL = 0.5  # seconds between checks that a busy actor's worker is still there


class _Layout:
    """Where each of a dict of arrays lives in one flat byte buffer (64-byte aligned
    offsets, any dtypes): pack() copies the arrays into a new buffer, views() reads them
    back out of one without copying."""

    def __init__(self, arrays):
        self.entries = []
        offset = 0
        for name, a in arrays.items():
            a = np.asarray(a)
            self.entries.append((name, a.dtype.str, tuple(a.shape), offset))
            offset += -(-a.nbytes // _ALIGN) * _ALIGN
        self.nbytes = offset

    def pack(self, arrays):
        flat = np.zeros(self.nbytes, np.uint8)
        for name, view in self.views(flat).items():
            np.copyto(view, arrays[name])
        return flat

    def views(self, flat):
        out = {}
        for name, dtype, shape, offset in self.entries:
            dtype = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = flat[offset:offset + count * dtype.itemsize].view(dtype).reshape(shape)
        return out

    def state(self):
        return self.entries, self.nbytes

    @classmethod
    def from_state(cls, state):
        self = cls.__new__(cls)
        self.entries, self.nbytes = [tuple(e) for e in state[0]], state[1]
        return self


class _Shards:
    """A Dask actor: a replica of the network (rebuilt from its JSON config) and the
    training arrays, on one worker. step() is a pure function of its arguments (the
    parameters, buffers and example indices), so a step redone on another replica gives
    the same result."""

    def __init__(self, spec, metric, dtype, params_state, buffers_state, X, y):
        from ..nn import from_config, loss_from_config
        cfg = json.loads(spec)
        self.network = from_config(cfg["network"])
        self.loss = loss_from_config(cfg["loss"])
        self.metric, self.dtype = metric, (None if dtype is None else np.dtype(dtype))
        self.params_layout = _Layout.from_state(params_state)
        self.buffers_layout = _Layout.from_state(buffers_state)
        self.X, self.y = X, y
        buffers = getattr(self.network, "buffers", None)
        self.buffers = buffers if isinstance(buffers, dict) else {}
        self.network.train()

    def step(self, params, buffers, idx):
        """One shard's forward and backward pass: (examples, loss, correct, predictions,
        grads, buffers) with grads (the shard's mean, the loss's own reduction) and the
        buffers as flat buffers in the driver's layouts."""
        from ..nn.model import _correct
        network = self.network
        own = network.params
        for k, v in self.params_layout.views(params).items():
            np.copyto(own[k], v)
        if buffers is not None:
            for k, v in self.buffers_layout.views(buffers).items():
                np.copyto(self.buffers[k], v)
        xb, yb = self.X[idx], self.y[idx]
        if self.dtype is not None and xb.dtype.kind == "f" and xb.dtype != self.dtype:
            xb = xb.astype(self.dtype)
        y_pred = network.forward(xb, training=True)
        value = float(self.loss.forward(y_pred, yb))
        correct, count = _correct(self.metric, y_pred, yb) if self.metric is not None else (0, 0)
        network.backward_params(self.loss.backward())
        grads = self.params_layout.pack(network.grads)
        new_buffers = self.buffers_layout.pack(self.buffers) if self.buffers else None
        return len(idx), value, correct, count, grads, new_buffers


def _lost(error):
    """Whether an actor call failed because its worker is gone (rather than raising)."""
    from distributed.comm.core import CommClosedError
    if isinstance(error, (OSError, CommClosedError)):
        return True
    return isinstance(error, RuntimeError) and "Actor was lost" in str(error)


class DataParallel:
    """Synchronous data parallel training of a fastnn Model on a Dask cluster.

    ``DataParallel(model).fit(X, y, epochs=..., batch_size=..., optimizer=..., rng=...)``
    trains ``model`` in place, batch for batch as Model.fit would (the same
    permutation per epoch from the same generator, the same batches): each batch is
    split into one shard per worker (the cluster's worker count when fit starts), every
    shard's gradient is computed by a worker with fastnn, the driver forms
    sum(n_i * g_i) / n (the full batch's mean gradient), takes one optimizer step on
    the model's own parameters, and the next batch's shards carry the new parameters.
    For a network without dropout or batch norm the parameters equal single-process
    training on the same batches, to rounding. Dropout draws its masks on the workers
    (other masks than one process would); batch norm normalises each shard by the
    shard's own statistics and its running averages are the shard-size-weighted mean
    of the shards' (as in data-parallel training without synchronised batch norm).

    Each fit scatters X and y to every worker once and starts one Dask actor per worker
    (a replica of the network holding the data); the driver calls the actors directly
    each step (through the scheduler when the client has direct_to_workers=False).
    A shard's step is a pure function of the parameters and the batch's indices: when a
    worker dies, its actor is made again on a surviving worker (a restarted one when it
    is back) and the lost shard computed again there, so the result is unchanged.

    client / address: a distributed.Client or a scheduler address; neither: the
    embedded LocalCluster. retries: how many times one step may lose a worker and be
    redone before fit gives up.
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
        self.replaced = 0  # replicas made again in the last fit, after their workers were lost
        self._pool = None

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

        model.optimizer = optimizer
        model._rng = generator
        model.stop_training = False
        modes = model._modes()
        params = model.network.params
        buffers = model._buffers()
        p_layout, b_layout = _Layout(params), _Layout(buffers)
        dtype = model._dtype()
        pool = self._pool_for(fn, (self._spec(), model._metric, None if dtype is None else np.dtype(dtype).str,
                                   p_layout.state(), b_layout.state()), X, y)
        retries = self.retries

        def run_batch(idx, acc):
            rows = np.arange(idx.start, idx.stop) if isinstance(idx, slice) else idx
            shards = [part for part in np.array_split(rows, pool.size) if len(part)]
            outs = pool.step(p_layout.pack(params), b_layout.pack(buffers) if buffers else None, shards, retries)
            total = sum(o[0] for o in outs)
            grads = [p_layout.views(o[4]) for o in outs]
            grads = {k: sum(o[0] * g[k] for o, g in zip(outs, grads)) / total if len(outs) > 1 else grads[0][k]
                     for k in params}
            if buffers:
                shard_buffers = [b_layout.views(o[5]) for o in outs]
                model._assign({}, {k: sum(o[0] * b[k] for o, b in zip(outs, shard_buffers)) / total
                                   for k in buffers})
            loss = sum(o[0] * o[1] for o in outs) / total
            acc.examples += total
            acc.loss_sum += loss * total
            correct, count = sum(o[2] for o in outs), sum(o[3] for o in outs)
            acc.correct += correct
            acc.predictions += count
            optimizer.step(grads)
            return loss, (correct / count if count else None)

        replaced = pool.replaced
        try:
            return model._epochs(fn, n, epochs, initial_epoch, batch_size, shuffle, generator, optimizer,
                                 callbacks, display, run_batch)
        finally:
            model._put_back(modes)
            self.replaced = pool.replaced - replaced

    def _pool_for(self, fn, args, X, y):
        """The actors of this fit: the last fit's when the network's architecture, the
        data (by content: a SHA-1 of X and y) and the cluster's workers are the same, so
        fitting one epoch at a time does not scatter the data and start the actors
        every time; new ones otherwise."""
        digest = hashlib.sha1(usedforsecurity=False)
        for a in (X, y):
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(memoryview(np.ascontiguousarray(a)).cast("B"))
        key = (args, digest.hexdigest())
        old = self._pool
        if old is not None and old.key == key and old.client.status == "running" \
                and sorted(old.where) == sorted(self.client.scheduler_info()["workers"]):
            return old
        self.close()
        pool = _Pool(self.client, fn, key, X, y)
        try:
            pool.start()
        except BaseException:
            pool.close()
            raise
        self._pool = pool
        return pool

    def close(self):
        """Release the actors and the scattered data the last fit left on the workers
        (kept so that the next fit on the same data starts at once)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Pool:
    """The actors of one fit (one per worker, in worker address order) and the data
    they were given (the driver's arrays are kept, to scatter again if the workers
    holding them are lost)."""

    def __init__(self, client, fn, key, X, y):
        self.client, self.fn, self.key = client, fn, key
        self.args = key[0]
        self.X, self.y = X, y
        self.token = uuid.uuid4().hex[:8]
        self.data = None
        self.futures, self.actors, self.where = [], [], []
        self.made = 0
        self.replaced = 0

    @property
    def size(self):
        return len(self.actors)

    def start(self):
        c = self.client
        workers = sorted(c.scheduler_info()["workers"])
        if not workers:
            c.wait_for_workers(1)
            workers = sorted(c.scheduler_info()["workers"])
        self._scatter()
        futures = [self._submit(w) for w in workers]
        self.futures = futures
        self.actors = [f.result() for f in futures]
        self.where = list(workers)

    def _scatter(self):
        old, self.data = self.data, self.client.scatter([self.X, self.y], broadcast=True, hash=False)
        for f in old or ():
            f.release()

    def _submit(self, worker):
        self.made += 1
        return self.client.submit(_Shards, *self.args, *self.data, actor=True, workers=[worker],
                                  allow_other_workers=False, pure=False,
                                  key=f"fastnn-dp-{self.token}-{self.made}")

    def step(self, params, buffers, shards, retries):
        """The outputs of actor j's step on shards[j], for every shard; shards whose actor
        was lost are computed again on a new actor."""
        outs = [None] * len(shards)
        todo = list(range(len(shards)))
        for attempt in range(retries + 1):
            calls, errors = [], {}
            for j in todo:
                try:
                    calls.append((j, self.actors[j].step(params, buffers, shards[j])))
                except Exception as e:  # the actor's future erred: its worker was lost
                    errors[j] = e
            for j, call in calls:
                while True:
                    try:
                        outs[j] = call.result(timeout=_POLL)
                        break
                    except TimeoutError:
                        # a call through the scheduler to a dead worker fails only after
                        # the connect timeout (30 s by default); the scheduler knows sooner
                        if not self._alive(j):
                            errors[j] = OSError(f"the worker {self.where[j]} of replica {j} is gone")
                            break
                    except Exception as e:
                        errors[j] = e
                        break
            if not errors:
                return outs
            for j, e in sorted(errors.items()):
                if not _lost(e) and self._alive(j):
                    raise e  # the step itself raised: redoing it would raise again
            if attempt == retries:
                j, e = min(errors.items())
                raise RuntimeError(f"{self.fn}: a step lost a worker {retries + 1} times in a row (shard {j}: "
                                   f"{type(e).__name__}: {e})") from e
            self._replace(sorted(errors))
            todo = sorted(errors)
        raise AssertionError("unreachable")  # pragma: no cover

    def _alive(self, j):
        return self.futures[j].status == "finished" and self.where[j] in self.client.scheduler_info()["workers"]

    def _replace(self, lost):
        """New actors for the lost ones: on live workers without an actor of this pool
        first (a restarted worker, when it is back), else on the least used live ones."""
        c = self.client
        dead = {self.where[j] for j in lost}
        deadline = time.monotonic() + 30
        while True:
            live = [w for w in sorted(c.scheduler_info()["workers"]) if w not in dead]
            if live or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not live:
            raise RuntimeError(f"{self.fn}: every worker holding a replica was lost and none is left")
        use = {w: 0 for w in live}
        for i, w in enumerate(self.where):
            if i not in lost and w in use:
                use[w] += 1
        for attempt in range(3):
            # Dask's active memory manager keeps one replica of scattered data that no
            # task waits for, so the dead worker may have held the only copy: then the
            # new actors' creation fails with lost dependencies, and the data goes out again
            if attempt or any(f.status != "finished" for f in self.data):
                self._scatter()
            for j in lost:
                self.futures[j].release()
                target = min(live, key=lambda w: use[w])
                use[target] += 1
                self.futures[j] = self._submit(target)
                self.where[j] = target
            try:
                for j in lost:
                    self.actors[j] = self.futures[j].result()
                break
            except Exception:
                if attempt == 2:
                    raise
                use = {w: 0 for w in live}
                for i, w in enumerate(self.where):
                    if i not in lost and w in use:
                        use[w] += 1
        self.replaced += len(lost)

    def close(self):
        futures, data = self.futures, self.data or ()
        self.futures, self.actors, self.data, self.where = [], [], None, []
        self.X = self.y = None
        for f in [*futures, *data]:
            try:
                f.release()
            except Exception:  # pragma: no cover - a client already closed
                pass
