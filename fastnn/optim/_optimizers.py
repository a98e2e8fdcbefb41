"""SGD (with momentum or Nesterov), RMSprop and Adam over fused in-place kernels.

An optimizer holds the caller's parameter arrays and its own state arrays (the
course's ``v`` and ``s``); ``step(grads)`` validates the gradients and hands every
array of one dtype to one kernel call (``sgd_step``, ``rmsprop_step``, ``adam_step``;
docs/KERNELS.md), which updates the parameters and the state in place. This layer
does no arithmetic on the arrays: it checks, converts gradients to their
parameter's dtype, and keeps the step count.
"""
import collections.abc
import numbers

import numpy as np

from .. import _args as A
from .. import _backends

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _owner(a):
    """The object that owns an array's memory (the end of its chain of bases)."""
    base = a.base
    while base is not None:
        a, base = base, getattr(base, "base", None)
    return a


def _label(keys, i):
    """How a message names parameter i: params[2] or params['W1']."""
    return f"[{keys[i]!r}]" if isinstance(keys[i], str) else f"[{keys[i]}]"


def _unpack_params(fn, params):
    """params (a dict of arrays, or any iterable of arrays) -> (keys, arrays, is_dict):
    keys are the dict's keys, or the positions 0, 1, ..."""
    if isinstance(params, np.ndarray) or isinstance(params, (str, bytes)):
        raise TypeError(f"{fn}: params must be a list (or dict) of arrays, got a single "
                        f"{type(params).__name__}; wrap one array in a list: [w]")
    if isinstance(params, collections.abc.Mapping):
        keys = list(params)
        bad = [k for k in keys if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{fn}: the keys of a params dict must be strings (they name the state "
                            f"entries of state_dict), got {bad[0]!r}")
        arrays = [params[k] for k in keys]
        is_dict = True
    else:
        try:
            arrays = list(params)
        except TypeError:
            raise TypeError(f"{fn}: params must be a list (or dict) of arrays, got "
                            f"{type(params).__name__}") from None
        keys = list(range(len(arrays)))
        is_dict = False
    if not arrays:
        raise ValueError(f"{fn}: params is empty; an optimizer needs at least one array to update")
    for i, p in enumerate(arrays):
        where = f"params{_label(keys, i)}"
        if not isinstance(p, np.ndarray):
            raise TypeError(f"{fn}: {where} must be a NumPy array (the optimizer updates it in place), "
                            f"got {type(p).__name__}")
        if p.dtype not in _FLOATS:
            raise TypeError(f"{fn}: {where} must be a float32 or float64 array in native byte order, got "
                            f"dtype {p.dtype}; it is updated in place, so a converted copy would not be "
                            f"the caller's array: convert it once (p = p.astype(np.float32)) and keep that")
        if not p.flags.writeable:
            raise ValueError(f"{fn}: {where} is read-only; the optimizer updates its parameters in place")
        if not p.flags.c_contiguous or not p.flags.aligned:
            raise ValueError(f"{fn}: {where} (shape {p.shape}, strides {p.strides}) is not a C-contiguous "
                             f"aligned array; it is updated in place, so a contiguous copy would silently not "
                             f"be the caller's array: use p = np.ascontiguousarray(p) and keep that array")
    _check_disjoint(fn, keys, arrays)
    return keys, arrays, is_dict


def _check_disjoint(fn, keys, arrays):
    """No two parameters share memory (each would be updated twice)."""
    spans = sorted((p.__array_interface__["data"][0], p.nbytes, i) for i, p in enumerate(arrays) if p.nbytes)
    for (start0, size0, i0), (start1, _, i1) in zip(spans, spans[1:]):
        if start1 < start0 + size0:
            first, second = sorted((i0, i1))
            raise ValueError(f"{fn}: params{_label(keys, first)} and params{_label(keys, second)} share memory; "
                             f"each parameter must be its own array (it would be updated twice)")


def _scalar(value):
    """A number as np.load gives it back (a 0-d array) -> the Python number."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


class _Optimizer:
    """What SGD, RMSprop and Adam share: the parameters, their state arrays, the
    gradient checks, the kernel call per dtype and the state_dict format."""

    _kernel = ""
    _hyper_names = ()  # after lr, in the constructor's order

    def __init__(self, params, lr, backend, hyper):
        fn = self._name
        self._keys, self._params, self._is_dict = _unpack_params(fn, params)
        self._hyper = self._check_hyper(fn, hyper)
        self.lr = A.real(fn, "lr", lr, low=0)
        if backend is not None:
            _backends.resolve(fn, self._kernel, backend)  # an unknown backend fails here, not at the first step
        self._backend = backend
        self._owners = {id(_owner(p)) for p in self._params}
        self._key_set = set(self._keys)
        groups = {}
        for i, p in enumerate(self._params):
            groups.setdefault(p.dtype, []).append(i)
        self._groups = list(groups.values())
        self._state = {name: [np.zeros(p.shape, p.dtype) for p in self._params] for name in self._state_names()}
        self._t = 0

    # ---- what each optimizer says about itself

    @property
    def _name(self):
        return type(self).__name__

    @classmethod
    def _check_hyper(cls, fn, hyper):
        raise NotImplementedError

    @staticmethod
    def _state_names_of(hyper):
        """The state arrays kept per parameter with these hyperparameters."""
        raise NotImplementedError

    def _state_names(self):
        return self._state_names_of(self._hyper)

    def _run(self, kernel, params, grads, state, t):
        raise NotImplementedError

    # ---- the public surface

    @property
    def params(self):
        """The parameter arrays being updated (a new list or dict of the same arrays)."""
        return dict(zip(self._keys, self._params)) if self._is_dict else list(self._params)

    def step(self, grads):
        """Update every parameter in place from its gradient: grads has the structure of
        params (a list or tuple of the same length, or a dict with the same keys) and
        each gradient its parameter's shape (any real dtype; converted, never modified)."""
        fn = f"{self._name}.step"
        lr = A.real(fn, f"lr (the {self._name}.lr attribute)", self.lr, low=0)
        grads = self._check_grads(fn, grads)
        _, kernel = _backends.resolve(fn, self._kernel, self._backend)
        t = self._t + 1
        for group in self._groups:
            state = {name: [arrays[i] for i in group] for name, arrays in self._state.items()}
            self._run(kernel, lr, [self._params[i] for i in group], [grads[i] for i in group], state, t)
        self._t = t

    def zero_state(self):
        """Forget the history: every state array back to zeros (and Adam's step count to 0)."""
        for arrays in self._state.values():
            for a in arrays:
                a.fill(0)
        self._t = 0

    def state_dict(self):
        """A plain dict of numbers, a string and NumPy arrays (copies) that np.savez can
        write and np.load(..., allow_pickle=False) read back: "optimizer" (the class
        name), the hyperparameters lr, ..., and "<state>.<key>" per state array (keys:
        the params dict's keys, or positions 0, 1, ... of a params list)."""
        d = {"optimizer": self._name, "lr": float(self.lr)}
        d.update(self._hyper)
        d.update(self._extra_state())
        for name, arrays in self._state.items():
            for key, a in zip(self._keys, arrays):
                d[f"{name}.{key}"] = a.copy()
        return d

    def load_state_dict(self, state):
        """Take over the hyperparameters and state arrays of `state` (as state_dict
        returned it, or as np.load read it back). Everything is checked before anything
        changes: the optimizer kind, every hyperparameter, the set of entries, and
        each array's shape (state arrays are converted to their parameter's dtype)."""
        fn = f"{self._name}.load_state_dict"
        if not isinstance(state, collections.abc.Mapping):
            raise TypeError(f"{fn}: state must be a dict (as state_dict returns), got {type(state).__name__}")
        kind = _scalar(state.get("optimizer"))
        if kind != self._name:
            raise ValueError(f"{fn}: state is not the state of a {self._name} optimizer "
                             f"(its 'optimizer' entry is {kind!r})")
        names = ("lr",) + self._hyper_names + tuple(self._extra_state())
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"{fn}: state lacks the entries {missing}")
        values = {n: _scalar(state[n]) for n in names}
        lr = A.real(fn, "lr", values["lr"], low=0)
        hyper = self._check_hyper(fn, {n: values[n] for n in self._hyper_names})
        extra = self._check_extra_state(fn, {n: values[n] for n in self._extra_state()})
        state_names = self._state_names_of(hyper)
        expected = {"optimizer", *names} | {f"{s}.{k}" for s in state_names for k in self._keys}
        unexpected = sorted(str(k) for k in state if k not in expected)
        missing = sorted(k for k in expected if k not in state)
        if missing or unexpected:
            raise ValueError(f"{fn}: state does not match these parameters: missing entries {missing[:6]}"
                             f"{' ...' if len(missing) > 6 else ''}, unexpected entries {unexpected[:6]}"
                             f"{' ...' if len(unexpected) > 6 else ''}")
        arrays = {}
        for s in state_names:
            arrays[s] = []
            for key, p in zip(self._keys, self._params):
                arrays[s].append(self._check_state_array(fn, f"{s}.{key}", state[f"{s}.{key}"], p, s))
        self.lr = lr
        self._hyper = hyper
        self._set_extra_state(extra)
        self._state = arrays

    def __repr__(self):
        hyper = ", ".join(f"{k}={v!r}" for k, v in self._hyper.items())
        return f"{self._name}(lr={self.lr!r}, {hyper}; {len(self._params)} arrays)"

    # ---- checks

    def _check_grads(self, fn, grads):
        """grads in params' order, each a C-contiguous array of its parameter's dtype
        and shape that shares no memory with a parameter (copied where it did)."""
        keys = self._keys
        if self._is_dict:
            if not isinstance(grads, collections.abc.Mapping):
                raise TypeError(f"{fn}: params is a dict, so grads must be a dict with the same keys, got "
                                f"{type(grads).__name__}")
            if len(grads) != len(keys) or any(k not in grads for k in keys):
                missing = [k for k in keys if k not in grads]
                extra = [k for k in grads if k not in self._key_set]
                raise ValueError(f"{fn}: grads must have the keys of params; missing {missing}, "
                                 f"unexpected {extra}")
            values = [grads[k] for k in keys]
        else:
            if not isinstance(grads, (list, tuple)):
                raise TypeError(f"{fn}: params is a list, so grads must be a list or tuple of the same "
                                f"length, got {type(grads).__name__}")
            if len(grads) != len(keys):
                raise ValueError(f"{fn}: grads has {len(grads)} arrays but params has {len(keys)}")
            values = list(grads)
        out = []
        for i, (g, p) in enumerate(zip(values, self._params)):
            if not (type(g) is np.ndarray and g.dtype is p.dtype and g.flags.c_contiguous):
                g = self._convert_grad(fn, keys, i, g, p)
            if g.shape != p.shape:
                raise ValueError(f"{fn}: grads{_label(keys, i)} has shape {g.shape} but params{_label(keys, i)} "
                                 f"has shape {p.shape}")
            if id(_owner(g)) in self._owners:
                g = g.copy()  # it shares memory with a parameter, which the kernel writes
            out.append(g)
        return out

    @staticmethod
    def _convert_grad(fn, keys, i, g, p):
        where = f"grads{_label(keys, i)}"
        if g is None:
            raise TypeError(f"{fn}: {where} must be an array, got None")
        try:
            arr = np.asarray(g)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{fn}: {where} cannot be read as a numeric array ({exc})") from None
        A.float_dtype(fn, where, arr)  # a TypeError for complex, object and string data
        if arr.shape != p.shape:
            raise ValueError(f"{fn}: {where} has shape {arr.shape} but params{_label(keys, i)} has shape {p.shape}")
        return np.ascontiguousarray(arr, dtype=p.dtype)

    def _check_state_array(self, fn, name, value, p, kind):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{fn}: state[{name!r}] cannot be read as a numeric array ({exc})") from None
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{fn}: state[{name!r}] must hold real numbers, got dtype {arr.dtype}")
        if arr.shape != p.shape:
            raise ValueError(f"{fn}: state[{name!r}] has shape {arr.shape} but its parameter has shape {p.shape}")
        arr = np.array(arr, dtype=p.dtype, order="C", copy=True)  # the optimizer's own, never the caller's
        if kind == "s" and bool(np.any(arr < 0)):
            raise ValueError(f"{fn}: state[{name!r}] holds negative values; it is a running average of "
                             f"squared gradients")
        return arr

    # Adam keeps its step count; the others have no extra state
    def _extra_state(self):
        return {}

    def _check_extra_state(self, fn, values):
        return values

    def _set_extra_state(self, values):
        pass


def _hyper_real(fn, name, value, low=0.0, high=None, high_open=False):
    return A.real(fn, name, value, low=low, high=high, high_open=high_open)


class SGD(_Optimizer):
    """Gradient descent, with the course's momentum when momentum > 0.

    Per parameter W with gradient dW (plus weight_decay * W when weight_decay > 0):
    without momentum W -= lr dW; with momentum beta, v = beta v + (1 - beta) dW and
    W -= lr v; with nesterov=True W -= lr (beta v + (1 - beta) dW) after updating v.
    (PyTorch's SGD(momentum=beta) accumulates v = beta v + dW: the same steps with
    lr * (1 - beta) in place of lr.)
    """

    _kernel = "sgd_step"
    _hyper_names = ("momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr, *, momentum=0.0, nesterov=False, weight_decay=0.0, backend=None):
        super().__init__(params, lr, backend,
                         {"momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay})

    @classmethod
    def _check_hyper(cls, fn, hyper):
        momentum = _hyper_real(fn, "momentum", hyper["momentum"], high=1.0, high_open=True)
        nesterov = A.flag(fn, "nesterov", hyper["nesterov"])
        if nesterov and momentum == 0:
            raise ValueError(f"{fn}: nesterov=True needs a momentum > 0, got momentum={momentum!r}")
        return {"momentum": momentum, "nesterov": nesterov,
                "weight_decay": _hyper_real(fn, "weight_decay", hyper["weight_decay"])}

    @staticmethod
    def _state_names_of(hyper):
        return ("v",) if hyper["momentum"] > 0 else ()

    momentum = property(lambda self: self._hyper["momentum"], doc="The momentum beta (0: none).")
    nesterov = property(lambda self: self._hyper["nesterov"], doc="Whether the step looks ahead (Nesterov).")
    weight_decay = property(lambda self: self._hyper["weight_decay"], doc="L2 coefficient added to the gradient.")

    def _run(self, kernel, lr, params, grads, state, t):
        h = self._hyper
        kernel(params, grads, state.get("v"), lr, h["momentum"], h["nesterov"], h["weight_decay"])


class RMSprop(_Optimizer):
    """The course's RMSprop: s = beta s + (1 - beta) dW^2, W -= lr dW / (sqrt(s) + eps)
    (dW plus weight_decay * W when weight_decay > 0); PyTorch's RMSprop(alpha=beta)."""

    _kernel = "rmsprop_step"
    _hyper_names = ("beta", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, *, beta=0.9, eps=1e-8, weight_decay=0.0, backend=None):
        super().__init__(params, lr, backend, {"beta": beta, "eps": eps, "weight_decay": weight_decay})

    @classmethod
    def _check_hyper(cls, fn, hyper):
        return {"beta": _hyper_real(fn, "beta", hyper["beta"], high=1.0, high_open=True),
                "eps": _hyper_real(fn, "eps", hyper["eps"]),
                "weight_decay": _hyper_real(fn, "weight_decay", hyper["weight_decay"])}

    @staticmethod
    def _state_names_of(hyper):
        return ("s",)

    beta = property(lambda self: self._hyper["beta"], doc="The decay rate of the squared-gradient average.")
    eps = property(lambda self: self._hyper["eps"], doc="Added to sqrt(s) in the denominator.")
    weight_decay = property(lambda self: self._hyper["weight_decay"], doc="L2 coefficient added to the gradient.")

    def _run(self, kernel, lr, params, grads, state, t):
        h = self._hyper
        kernel(params, grads, state["s"], lr, h["beta"], h["eps"], h["weight_decay"])


class Adam(_Optimizer):
    """The course's Adam: v = beta1 v + (1 - beta1) dW, s = beta2 s + (1 - beta2) dW^2,
    v^ = v / (1 - beta1^t), s^ = s / (1 - beta2^t), W -= lr v^ / (sqrt(s^) + eps), with
    t the number of steps taken, this one included (dW plus weight_decay * W when
    weight_decay > 0, as PyTorch's Adam, not AdamW)."""

    _kernel = "adam_step"
    _hyper_names = ("beta1", "beta2", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, *, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, backend=None):
        super().__init__(params, lr, backend,
                         {"beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay})

    @classmethod
    def _check_hyper(cls, fn, hyper):
        return {"beta1": _hyper_real(fn, "beta1", hyper["beta1"], high=1.0, high_open=True),
                "beta2": _hyper_real(fn, "beta2", hyper["beta2"], high=1.0, high_open=True),
                "eps": _hyper_real(fn, "eps", hyper["eps"]),
                "weight_decay": _hyper_real(fn, "weight_decay", hyper["weight_decay"])}

    @staticmethod
    def _state_names_of(hyper):
        return ("v", "s")

    beta1 = property(lambda self: self._hyper["beta1"], doc="The decay rate of the gradient average.")
    beta2 = property(lambda self: self._hyper["beta2"], doc="The decay rate of the squared-gradient average.")
    eps = property(lambda self: self._hyper["eps"], doc="Added to sqrt(s^) in the denominator.")
    weight_decay = property(lambda self: self._hyper["weight_decay"], doc="L2 coefficient added to the gradient.")

    @property
    def t(self):
        """The number of steps taken (the bias corrections' t of the last step)."""
        return self._t

    def _extra_state(self):
        return {"t": self._t}

    def _check_extra_state(self, fn, values):
        t = values["t"]
        if not isinstance(t, (numbers.Integral, np.integer)) or isinstance(t, (bool, np.bool_)) or t < 0:
            raise ValueError(f"{fn}: t (the step count) must be an int >= 0, got {t!r}")
        return {"t": int(t)}

    def _set_extra_state(self, values):
        self._t = values["t"]

    def _run(self, kernel, lr, params, grads, state, t):
        h = self._hyper
        kernel(params, grads, state["v"], state["s"], t, lr, h["beta1"], h["beta2"], h["eps"], h["weight_decay"])
