"""The Layer base class, the registry behind ``from_config``, and the shared checks.

A layer keeps what its backward pass needs from the last forward pass; parameters
live in ``params`` (the same array objects for the layer's whole life, so an
optimizer built once on them keeps updating them in place), their gradients in
``grads`` (replaced at every backward pass), untrained state in ``buffers``.
"""
import numbers

import numpy as np

_REGISTRY = {}


def register(cls):
    """Class decorator: make ``cls`` rebuildable by ``from_config`` under its name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def from_config(cfg):
    """Rebuild a layer (or a whole network) from ``layer.config()``.

    Only registered fastnn layer classes can be built; nothing is evaluated or
    unpickled. The parameters are freshly initialised: load trained values with
    ``set_params``.
    """
    if not isinstance(cfg, dict):
        raise TypeError(f"from_config: cfg must be a dict, got {type(cfg).__name__}")
    if "type" not in cfg:
        raise ValueError(f"from_config: cfg has no 'type' key (keys: {sorted(cfg)})")
    name = cfg["type"]
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"from_config: unknown layer type {name!r}; known: {sorted(_REGISTRY)}")
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    return cls._from_config(kwargs)


# ---------------------------------------------------------------- argument checks

_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def check_dtype(layer, dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in _DTYPES:
        raise ValueError(f"{layer}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def check_int(layer, name, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{layer}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_pair(layer, name, value, minimum=1):
    """An int or a pair of ints, each >= minimum; returned as given (int or tuple)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
        return tuple(check_int(layer, name, v, minimum) for v in value)
    return check_int(layer, name, value, minimum)


def check_choice(layer, name, value, choices):
    if value not in choices:
        raise ValueError(f"{layer}: {name} must be one of {choices}, got {value!r}")
    return value


def check_rng(layer, rng):
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng(rng)
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, numbers.Integral) or rng < 0:
        raise TypeError(f"{layer}: rng must be a numpy.random.Generator, an int seed >= 0 or None, got {rng!r}")
    return np.random.default_rng(int(rng))


def jsonable(value):
    """Tuples become lists, so a config survives a JSON round trip unchanged."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def as_float_input(layer, x, ndim=None, min_ndim=None, dtype=None, name="x"):
    """x as a float array (cast to the layer's dtype when it has one), rank checked.

    Integer, bool, complex, object and string inputs are a TypeError: a layer's input
    is an activation, and silently reading labels as activations hides bugs.
    """
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{layer}.forward: {name} cannot be read as an array ({exc})") from None
    if arr.dtype.kind != "f":
        raise TypeError(f"{layer}.forward: {name} must be a float array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{layer}.forward: {name} must be {_ranks(ndim)}, got shape {arr.shape}")
    if min_ndim is not None and arr.ndim < min_ndim:
        raise ValueError(f"{layer}.forward: {name} must have at least {min_ndim} dimensions, got shape {arr.shape}")
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    elif arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)
    return arr


def _ranks(ndim):
    if isinstance(ndim, tuple):
        return " or ".join(f"{n}-D" for n in ndim)
    return f"{ndim}-D"


def check_dy(layer, dy, shape, dtype):
    if shape is None:
        raise RuntimeError(f"{layer}.backward called before forward (nothing to differentiate)")
    try:
        arr = np.asarray(dy)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{layer}.backward: dy cannot be read as an array ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{layer}.backward: dy must be a float array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{layer}.backward: dy has shape {arr.shape} but the forward output had shape {tuple(shape)}")
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr


# ---------------------------------------------------------------- the base class

# what a layer keeps between forward and backward; clear_cache() resets these
_CACHE_ATTRS = ("_cache", "_act_cache", "_out_shape", "_in_shape", "_pooled_shape")


class Layer:
    """Base of every layer and container.

    ``forward(x, training=True)`` runs in training mode when both the argument and
    ``self.training`` (``train()``/``eval()``) say so: ``net.eval()`` or
    ``forward(x, training=False)`` each select inference behaviour (dropout off,
    batch norm on running statistics).
    """

    #: prefix of the automatic child names a ``Sequential`` gives (``conv1``, ``pool2``)
    prefix = "layer"

    def __init__(self):
        self.training = True
        self._params = {}
        self._grads = {}
        self._buffers = {}

    # -- state
    @property
    def params(self):
        """name -> parameter array (the same objects for the layer's whole life)."""
        return self._params

    @property
    def grads(self):
        """name -> gradient of the last backward pass (same keys and shapes as params)."""
        return self._grads

    @property
    def buffers(self):
        """name -> untrained state saved with the parameters (batch-norm running averages)."""
        return self._buffers

    def _add_param(self, name, value):
        self._params[name] = np.ascontiguousarray(value)
        self._grads[name] = np.zeros_like(self._params[name])

    @property
    def n_params(self):
        return int(sum(p.size for p in self.params.values()))

    def state_dict(self):
        """Copies of every parameter and buffer, by name."""
        out = {k: v.copy() for k, v in self.params.items()}
        out.update({k: v.copy() for k, v in self.buffers.items()})
        return out

    def set_params(self, values, strict=True):
        """Copy ``values`` (name -> array) into the parameters and buffers in place.

        The arrays keep their identity (an optimizer built on ``params`` stays valid)
        and their dtype. With ``strict`` every name must be known and every parameter
        and buffer given; shapes must match exactly.
        """
        cls = type(self).__name__
        if not hasattr(values, "items"):
            raise TypeError(f"{cls}.set_params: values must be a dict name -> array, got {type(values).__name__}")
        targets = dict(self.params)
        targets.update(self.buffers)
        unknown = sorted(set(values) - set(targets))
        missing = sorted(set(targets) - set(values))
        if unknown:
            raise ValueError(f"{cls}.set_params: unknown names {unknown}; known: {sorted(targets)}")
        if strict and missing:
            raise ValueError(f"{cls}.set_params: missing values for {missing}")
        converted = {}
        for name, value in values.items():
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"{cls}.set_params: {name} must be real numbers, got dtype {arr.dtype}")
            if arr.shape != targets[name].shape:
                raise ValueError(f"{cls}.set_params: {name} has shape {arr.shape}, expected {targets[name].shape}")
            converted[name] = arr
        for name, arr in converted.items():  # every check passed: nothing is half-loaded
            np.copyto(targets[name], arr, casting="unsafe")

    load_state_dict = set_params

    # -- modes
    def train(self, mode=True):
        for layer in self.layers_iter():
            layer.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def layers_iter(self):
        """This layer and every layer inside it (depth first)."""
        yield self

    def clear_cache(self):
        """Drop what the last forward pass kept for backward (frees the activations;
        a later ``backward`` needs a new ``forward``). Recurses into containers."""
        for layer in self.layers_iter():
            for attr in _CACHE_ATTRS:
                if getattr(layer, attr, None) is not None:
                    setattr(layer, attr, None)

    def _mode(self, training):
        return bool(training) and self.training

    # -- computation
    def forward(self, x, training=True):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x, training=True):
        return self.forward(x, training=training)

    # -- configuration
    def config(self):
        """A JSON-serialisable dict ``{"type": ClassName, **constructor arguments}``."""
        cfg = {"type": type(self).__name__}
        cfg.update({k: jsonable(v) for k, v in self._config_args().items()})
        return cfg

    def _config_args(self):
        return {}

    @classmethod
    def _from_config(cls, kwargs):
        return cls(**kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"
