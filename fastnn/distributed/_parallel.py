"""Synchronous data-parallel training on Dask: every batch is cut into one shard per
worker, each worker computes its shard's gradients with fastnn, the driver sums them
weighted by shard size (so the sum is the full batch's mean gradient), takes one
optimizer step and sends the new parameters with the next batch's shards.

The shards run on Dask actors (one per worker, holding a replica of the network and
the training data), called directly by the client: a step costs one message to each
worker and one back, not a pass through the scheduler's task machinery (a round trip of
two tasks took 13-20 ms on a 2-core machine, two actor calls 3-7 ms). Parameters and
gradients travel as one contiguous buffer each. An actor whose worker dies is made
again on a surviving worker and its shard of the step is computed again there.

When the client talks to the workers directly over plain TCP (the embedded cluster's
does), each step travels instead over a connection of the driver's own to each actor
(opened through Dask when the actor starts, checked by a random token): a header and
the raw bytes of the buffers, no serialisation, no pass through either side's event
loop. A Dask actor call took 1.5-3 ms each way on the 2-core machine, this 0.1-0.3 ms.
A step that fails there is done again through Dask (which raises the step's own
exception, or finds the worker gone)."""
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time
import uuid

import numpy as np

from . import _cluster

__all__ = ["DataParallel"]

_ALIGN = 64
_POLL = 0.5  # seconds between checks that a busy actor's worker is still there

# the direct connection: a request is a header (op, parameter bytes, buffer bytes, index
# count) then the parameters, the buffers and the indices (int64); a reply a header
# (status, examples, loss, correct, predictions, gradient bytes, buffer bytes) then the
# gradients and the buffers. Little-endian.
_REQUEST = struct.Struct("<IQQQ")
_REPLY = struct.Struct("<IQdqqQQ")
_STEP = 1
_DONE, _FAILED = 0, 1
_TOKEN_BYTES = 32
_ACCEPT_TIMEOUT = 60  # seconds an actor waits for the driver to connect
_CONNECT_TIMEOUT = 5
_HASH_CHUNK = 4 << 20  # data above this is hashed in pieces on several threads


class _Layout:
    """Where each of a dict of arrays lives in one flat byte buffer (64-byte aligned
    offsets, any dtypes): pack() copies the arrays into a buffer, views() reads them
    back out of one without copying. ``dtype`` is the arrays' dtype when they share
    one (then the whole buffer is one array of it, the padding zeros), else None."""

    def __init__(self, arrays):
        self.entries = []
        offset = 0
        for name, a in arrays.items():
            a = np.asarray(a)
            self.entries.append((name, a.dtype.str, tuple(a.shape), offset))
            offset += -(-a.nbytes // _ALIGN) * _ALIGN
        self.nbytes = offset
        self._prepare()

    def _prepare(self):
        self._items = [(name, np.dtype(dtype), tuple(shape), offset) for name, dtype, shape, offset in self.entries]
        dtypes = {dtype for _, dtype, _, _ in self._items}
        self.dtype = dtypes.pop() if len(dtypes) == 1 and self.nbytes % next(iter(dtypes)).itemsize == 0 \
            else None

    def empty(self):
        return np.zeros(self.nbytes, np.uint8)

    def pack(self, arrays, out=None):
        flat = self.empty() if out is None else out
        for name, view in self.views(flat).items():
            np.copyto(view, arrays[name])
        return flat

    def views(self, flat):
        return {name: np.ndarray(shape, dtype, buffer=flat, offset=offset)
                for name, dtype, shape, offset in self._items}

    def state(self):
        return self.entries, self.nbytes

    @classmethod
    def from_state(cls, state):
        self = cls.__new__(cls)
        self.entries, self.nbytes = [tuple(e) for e in state[0]], state[1]
        self._prepare()
        return self


class _Shards:
    """A Dask actor: a replica of the network (rebuilt from its JSON config) and the
    training arrays, on one worker. step() is a pure function of its arguments (the
    parameters, buffers and example indices), so a step redone on another replica gives
    the same result. open_channel() lets the driver send steps over a connection of its
    own (see the module's doc)."""

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
        self._lock = threading.Lock()  # one step at a time (a layer keeps its activations)

    def step(self, params, buffers, idx, out=None):
        """One shard's forward and backward pass: (examples, loss, correct, count,
        grads, buffers) with grads (the shard's mean, the loss's own reduction) and the
        buffers as flat buffers in the driver's layouts (written into out = (grads,
        buffers) when given)."""
        with self._lock:
            return self._step(params, buffers, idx, out)

    def _step(self, params, buffers, idx, out):
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
        grads_out, buffers_out = out if out is not None else (None, None)
        grads = self.params_layout.pack(network.grads, grads_out)
        new_buffers = self.buffers_layout.pack(self.buffers, buffers_out) if self.buffers else None
        return len(idx), value, correct, count, grads, new_buffers

    def open_channel(self, token):
        """Listen on this worker's host for one connection from the driver that sends
        `token` first; (host, port), or None when this worker's comm is not plain TCP or
        the port cannot be opened (the driver then calls step through Dask)."""
        from distributed import get_worker
        from distributed.comm.addressing import parse_address, parse_host_port
        scheme, location = parse_address(get_worker().address)
        if scheme != "tcp":
            return None
        host, _ = parse_host_port(location)
        try:
            listener = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        except OSError:
            return None
        listener.settimeout(_ACCEPT_TIMEOUT)
        threading.Thread(target=self._serve, args=(listener, bytes(token)), daemon=True,
                         name="fastnn-data-parallel").start()
        return host, listener.getsockname()[1]

    def _serve(self, listener, token):
        """Answer the driver's step requests on its connection until it closes it."""
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        finally:
            listener.close()
        with conn:
            try:
                conn.settimeout(_CONNECT_TIMEOUT)
                if not hmac.compare_digest(bytes(_recv_exact(conn, bytearray(len(token)))), token):
                    return
                conn.settimeout(None)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                params, buffers = self.params_layout.empty(), self.buffers_layout.empty()
                out = (self.params_layout.empty(), self.buffers_layout.empty())
                header = bytearray(_REQUEST.size)
                while True:
                    op, n_params, n_buffers, n_idx = _REQUEST.unpack(_recv_exact(conn, header))
                    if op != _STEP or n_params != params.nbytes or n_buffers not in (0, buffers.nbytes) \
                            or n_idx > len(self.y):
                        return
                    _recv_exact(conn, params)
                    if n_buffers:
                        _recv_exact(conn, buffers)
                    idx = _recv_exact(conn, np.empty(n_idx, "<i8"))
                    try:
                        n, value, correct, count, grads, new_buffers = self.step(
                            params, buffers if n_buffers else None, idx, out)
                    except Exception:  # the driver does the step again through Dask, which raises it
                        conn.sendall(_REPLY.pack(_FAILED, 0, 0.0, 0, 0, 0, 0))
                        continue
                    n_new = 0 if new_buffers is None else new_buffers.nbytes
                    conn.sendall(_REPLY.pack(_DONE, n, value, correct, count, grads.nbytes, n_new))
                    conn.sendall(grads)
                    if n_new:
                        conn.sendall(new_buffers)
            except (OSError, EOFError):
                return


def _recv_exact(sock, buf, alive=None):
    """Fill buf (a writable buffer) from sock; EOFError when the peer closed it. With
    `alive`, the socket has a timeout and alive() says whether to keep waiting."""
    view = memoryview(buf).cast("B")
    got = 0
    while got < len(view):
        try:
            n = sock.recv_into(view[got:])
        except socket.timeout:
            if alive is not None and alive():
                continue
            raise OSError("the worker is gone") from None
        if n == 0:
            raise EOFError("connection closed")
        got += n
    return buf


def _send_all(sock, buffers, alive):
    for buf in buffers:
        view = memoryview(buf).cast("B")
        sent = 0
        while sent < len(view):
            try:
                sent += sock.send(view[sent:])
            except socket.timeout:
                if not alive():
                    raise OSError("the worker is gone") from None


class _StepFailed(Exception):
    """The step raised on the worker (the driver does it again through Dask to get the
    exception itself)."""


class _Channel:
    """The driver's end of a direct connection to one actor."""

    def __init__(self, address, token, p_layout, b_layout):
        self.sock = socket.create_connection(tuple(address), timeout=_CONNECT_TIMEOUT)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(token)
            self.sock.settimeout(_POLL)
        except BaseException:
            self.sock.close()
            raise
        self.header = bytearray(_REPLY.size)
        self.grads, self.buffers = p_layout.empty(), b_layout.empty()

    def send(self, params, buffers, idx, alive):
        idx = np.ascontiguousarray(idx, "<i8")
        head = _REQUEST.pack(_STEP, params.nbytes, 0 if buffers is None else buffers.nbytes, len(idx))
        _send_all(self.sock, [head, params] + ([buffers] if buffers is not None else []) + [idx], alive)

    def receive(self, alive):
        """The reply to the last send (its arrays are this channel's, until the next one)."""
        status, n, value, correct, count, n_grads, n_buffers = _REPLY.unpack(
            _recv_exact(self.sock, self.header, alive))
        if status != _DONE:
            raise _StepFailed()
        if n_grads != self.grads.nbytes or n_buffers not in (0, self.buffers.nbytes):
            raise OSError(f"a reply of {n_grads} + {n_buffers} bytes, not {self.grads.nbytes} + "
                          f"{self.buffers.nbytes}")
        _recv_exact(self.sock, self.grads, alive)
        if n_buffers:
            _recv_exact(self.sock, self.buffers, alive)
        return n, value, correct, count, self.grads, (self.buffers if n_buffers else None)

    def close(self):
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass


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
    (a replica of the network holding the data). When the client talks to the workers
    directly (direct_to_workers=True, as the embedded cluster's) over plain TCP, each
    step goes over a connection of the driver's own to each actor (token-checked, raw
    bytes); otherwise as a Dask actor call (through the scheduler when the client has
    direct_to_workers=False).
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
        # the buffers a step sends, written in place every step (the last step's have left
        # by the time its replies are in)
        send_params, send_buffers = p_layout.empty(), (b_layout.empty() if buffers else None)
        param_views = list(p_layout.views(send_params).items())
        buffer_views = list(b_layout.views(send_buffers).items()) if buffers else []
        flat = p_layout.dtype  # all parameters of one dtype: the gradients are summed as one array

        def run_batch(idx, acc):
            rows = np.arange(idx.start, idx.stop) if isinstance(idx, slice) else idx
            shards = [part for part in np.array_split(rows, pool.size) if len(part)]
            for k, view in param_views:
                np.copyto(view, params[k])
            for k, view in buffer_views:
                np.copyto(view, buffers[k])
            outs = pool.step(send_params, send_buffers, shards, retries)
            total = sum(o[0] for o in outs)
            if len(outs) == 1:
                grads = p_layout.views(outs[0][4])
            elif flat is not None:
                # sum(n_i * g_i) / n over the whole buffer at once (the same operations, in
                # the same order, as per parameter)
                summed = outs[0][0] * outs[0][4].view(flat)
                for o in outs[1:]:
                    summed += o[0] * o[4].view(flat)
                summed /= total
                grads = p_layout.views(summed.view(np.uint8))
            else:
                views = [p_layout.views(o[4]) for o in outs]
                grads = {k: sum(o[0] * g[k] for o, g in zip(outs, views)) / total for k in params}
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
        key = (args, _digest((X, y)))
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


def _digest(arrays):
    """A SHA-1 of the arrays' dtypes, shapes and bytes. Data above 4 MiB is hashed in
    pieces on as many threads as this process has cores (hashlib lets go of the GIL), and
    the pieces' digests hashed together: 16 MB took 16 ms on one thread on the 2-core
    machine."""
    digest = hashlib.sha1(usedforsecurity=False)
    for a in arrays:
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        data = memoryview(np.ascontiguousarray(a)).cast("B")
        parts = min(_cluster._cores(), max(1, len(data) // _HASH_CHUNK))
        if parts == 1:
            digest.update(data)
            continue
        bounds = [len(data) * i // parts for i in range(parts + 1)]
        pieces = [None] * parts

        def work(i):
            pieces[i] = hashlib.sha1(data[bounds[i]:bounds[i + 1]], usedforsecurity=False).digest()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(1, parts)]
        for t in threads:
            t.start()
        work(0)
        for t in threads:
            t.join()
        digest.update(f"{parts} pieces".encode())
        for piece in pieces:
            digest.update(piece)
    return digest.hexdigest()


class _Pool:
    """The actors of one fit (one per worker, in worker address order), the direct
    connections to them (where the client talks to the workers directly over plain
    TCP) and the data they were given (the driver's arrays are kept, to scatter again if
    the workers holding them are lost)."""

    use_channels = True  # False: every step through Dask actor calls (for comparisons)

    def __init__(self, client, fn, key, X, y):
        self.client, self.fn, self.key = client, fn, key
        self.args = key[0]
        self.p_layout, self.b_layout = _Layout.from_state(self.args[3]), _Layout.from_state(self.args[4])
        self.X, self.y = X, y
        self.token = uuid.uuid4().hex[:8]
        self.data = None
        self.futures, self.actors, self.where, self.channels = [], [], [], []
        self.direct = self.use_channels and bool(getattr(client, "direct_to_workers", False))
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
        self.channels = [None] * len(self.actors)
        self._open_channels(range(len(self.actors)))

    def _scatter(self):
        old, self.data = self.data, self.client.scatter([self.X, self.y], broadcast=True, hash=False)
        for f in old or ():
            f.release()

    def _submit(self, worker):
        self.made += 1
        return self.client.submit(_Shards, *self.args, *self.data, actor=True, workers=[worker],
                                  allow_other_workers=False, pure=False,
                                  key=f"fastnn-dp-{self.token}-{self.made}")

    def _open_channels(self, indices):
        """Direct connections to these actors (each with its own random token, sent
        through Dask); an actor that cannot be reached so gets its steps through Dask."""
        for j in indices:
            self._drop_channel(j)
        if not self.direct:
            return
        tokens = {j: os.urandom(_TOKEN_BYTES) for j in indices}
        calls = {}
        for j in indices:
            try:
                calls[j] = self.actors[j].open_channel(tokens[j])
            except Exception:  # the actor's worker is gone: its first step finds out
                pass
        for j, call in calls.items():
            try:
                address = call.result(timeout=30)
                if address is not None:
                    self.channels[j] = _Channel(address, tokens[j], self.p_layout, self.b_layout)
            except Exception:  # not reachable (or gone): this actor's steps go through Dask
                self.channels[j] = None

    def _drop_channel(self, j):
        channel, self.channels[j] = self.channels[j], None
        if channel is not None:
            channel.close()

    def _call(self, j, params, buffers, idx, calls, errors):
        """Start shard j's step as a Dask actor call."""
        try:
            calls.append((j, self.actors[j].step(params, buffers, idx)))
        except Exception as e:  # the actor's future erred: its worker was lost
            errors[j] = e

    def step(self, params, buffers, shards, retries):
        """The outputs of actor j's step on shards[j], for every shard; shards whose actor
        was lost are computed again on a new actor. A step that fails on a direct
        connection is done again as a Dask actor call, which raises the step's own
        exception, or fails because the worker is gone (then the actor is replaced)."""
        outs = [None] * len(shards)
        todo = list(range(len(shards)))
        for attempt in range(retries + 1):
            calls, errors, sent = [], {}, []
            for j in todo:
                channel = self.channels[j]
                if channel is not None:
                    try:
                        channel.send(params, buffers, shards[j], lambda j=j: self._alive(j))
                        sent.append(j)
                        continue
                    except (OSError, EOFError):
                        self._drop_channel(j)
                self._call(j, params, buffers, shards[j], calls, errors)
            for j in sent:
                try:
                    outs[j] = self.channels[j].receive(lambda j=j: self._alive(j))
                except _StepFailed:
                    self._call(j, params, buffers, shards[j], calls, errors)
                except (OSError, EOFError):
                    self._drop_channel(j)
                    self._call(j, params, buffers, shards[j], calls, errors)
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
        self._open_channels(lost)

    def close(self):
        for j in range(len(self.channels)):
            self._drop_channel(j)  # the actor's end sees the connection close and stops
        futures, data = self.futures, self.data or ()
        self.futures, self.actors, self.data, self.where, self.channels = [], [], None, [], []
        self.X = self.y = None
        for f in [*futures, *data]:
            try:
                f.release()
            except Exception:  # pragma: no cover - a client already closed
                pass
