"""Batched inference over a Dask array's chunks, the model scattered to each worker once."""
import uuid

import numpy as np

from . import _cluster, _wire

__all__ = ["predict"]


def _predict_block(block, model_bytes, token, batch_size):
    model, lock = _wire.cached_model(token, model_bytes)
    with lock:
        return model.predict(block, batch_size=batch_size)


def predict(model, X, *, client=None, address=None, batch_size=256, compute=False):
    """``model.predict`` over the chunks of the Dask array X (N, ...): one task per
    chunk of rows, each running Model.predict on its worker. The model travels once to
    every worker as the bytes of its .npz (client.scatter(..., broadcast=True)); each
    worker rebuilds it once (Model.load) and keeps it for the call's chunks. X chunked
    along other axes than the first is rechunked to whole rows. A NumPy X is cut into
    chunks of 4 * batch_size rows.

    Returns a Dask array of the outputs (chunked like X's rows), or, with compute=True,
    the NumPy array (equal to model.predict(X)). The returned Dask array refers to data
    held by the cluster: compute it while the cluster (the embedded one lives until
    shutdown() or exit) is up."""
    fn = "fastnn.distributed.predict"
    _cluster.require_dask(fn)
    import dask.array as da
    from ..nn.model import Model
    if not isinstance(model, Model):
        raise TypeError(f"{fn}: model must be a fastnn.nn.Model, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be an integer >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    if isinstance(X, da.Array):
        pass
    elif isinstance(X, np.ndarray):
        X = da.from_array(X, chunks=(4 * batch_size,) + X.shape[1:])
    else:
        raise TypeError(f"{fn}: X must be a dask.array.Array (or a numpy array), got {type(X).__name__}")
    if X.ndim == 0:
        raise ValueError(f"{fn}: X must have a batch axis (shape (N, ...)), got a 0-d array")
    if any(np.isnan(c) for dim in X.chunks for c in dim):
        raise ValueError(f"{fn}: X has chunks of unknown size (nan); call X.compute_chunk_sizes() first")
    if X.shape[0] == 0:
        raise ValueError(f"{fn}: X holds no examples (shape {X.shape})")
    if X.ndim > 1 and any(len(dim) > 1 for dim in X.chunks[1:]):
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    # the output's per-example shape and dtype, from one example of zeros on the driver
    probe = model.predict(np.zeros((1,) + X.shape[1:], dtype=X.dtype))
    out_tail, out_dtype = probe.shape[1:], probe.dtype
    c = _cluster.get_client(fn, client, address)
    model_future = c.scatter(_wire.model_to_bytes(model), broadcast=True, hash=False)
    token = uuid.uuid4().hex
    chunks = (X.chunks[0],) + tuple((s,) for s in out_tail)
    drop = tuple(range(len(out_tail) + 1, X.ndim)) if X.ndim > len(out_tail) + 1 else ()
    new = tuple(range(X.ndim, len(out_tail) + 1)) if len(out_tail) + 1 > X.ndim else ()
    result = da.map_blocks(_predict_block, X, model_future, token, batch_size, dtype=out_dtype, chunks=chunks,
                           drop_axis=drop, new_axis=new, name=f"fastnn-predict-{token[:8]}",
                           meta=np.empty((0,) + out_tail, dtype=out_dtype))
    if compute:
        return c.compute(result).result()
    return result
