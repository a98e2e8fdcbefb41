"""Models travel between the driver and the workers as the bytes of the ``.npz``
Model.save writes (plain arrays and a JSON string), read back with Model.load
(allow_pickle=False): never a pickle of a model object."""
import collections
import os
import tempfile
import threading

__all__ = ["model_to_bytes", "model_from_bytes", "cached_model"]


def model_to_bytes(model):
    fd, path = tempfile.mkstemp(prefix=".fastnn-dist-", suffix=".npz")
    os.close(fd)
    try:
        model.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def model_from_bytes(data):
    from ..nn.model import Model
    fd, path = tempfile.mkstemp(prefix=".fastnn-dist-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Model.load(path)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


_cache = collections.OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 4


def cached_model(token, data):
    """(Model, lock) of `data` (npz bytes), rebuilt once per worker process per `token`
    (the few most recent kept). Hold the lock while using the model: a layer keeps its
    activations, so two threads of one worker must not run the same model at once."""
    with _cache_lock:
        entry = _cache.get(token)
        if entry is not None:
            _cache.move_to_end(token)
            return entry
    entry = (model_from_bytes(data), threading.Lock())
    with _cache_lock:
        entry = _cache.setdefault(token, entry)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return entry
