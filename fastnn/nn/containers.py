"""Containers: ``Sequential`` and the course's residual block ``Residual``.

Children are named (``conv1``, ``pool1``, ``linear2`` ...: the child's ``prefix`` and a
running index per prefix, or the names given as ``(name, layer)`` pairs); parameter,
gradient and buffer names are ``"<child>.<name>"``, nested with dots
(``"block1.main.conv1.w"``).
"""
import numpy as np

from .. import activation_backward, activation_forward
from ._base import Layer, check_choice, check_dy, from_config, register


def _collect(children, attr):
    out = {}
    for name, layer in children:
        for key, value in getattr(layer, attr).items():
            out[f"{name}.{key}"] = value
    return out


def _check_name(owner, name):
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"{owner}: a child name must be a non-empty string without dots, got {name!r}")
    return name


class _Container(Layer):
    def _children(self):
        raise NotImplementedError

    @property
    def params(self):
        return _collect(self._children(), "params")

    @property
    def grads(self):
        return _collect(self._children(), "grads")

    @property
    def buffers(self):
        return _collect(self._children(), "buffers")

    def layers_iter(self):
        yield self
        for _, layer in self._children():
            yield from layer.layers_iter()

    def set_params(self, values, strict=True):
        cls = type(self).__name__
        if not hasattr(values, "items"):
            raise TypeError(f"{cls}.set_params: values must be a dict name -> array, got {type(values).__name__}")
        known = set(self.params) | set(self.buffers)
        unknown = sorted(set(values) - known)
        missing = sorted(known - set(values))
        if unknown:
            raise ValueError(f"{cls}.set_params: unknown names {unknown}; known: {sorted(known)}")
        if strict and missing:
            raise ValueError(f"{cls}.set_params: missing values for {missing}")
        parts = []
        for name, layer in self._children():
            sub = {k[len(name) + 1:]: v for k, v in values.items() if k.startswith(name + ".")}
            parts.append((layer, sub))
        # validate every child's share before writing any (nothing half-loaded)
        for layer, sub in parts:
            _validate_only(layer, sub)
        for layer, sub in parts:
            layer.set_params(sub, strict=False)

    load_state_dict = set_params


def _validate_only(layer, values):
    targets = dict(layer.params)
    targets.update(layer.buffers)
    for name, value in values.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{type(layer).__name__}.set_params: {name} must be real numbers, got dtype {arr.dtype}")
        if arr.shape != targets[name].shape:
            raise ValueError(f"{type(layer).__name__}.set_params: {name} has shape {arr.shape}, "
                             f"expected {targets[name].shape}")


@register
class Sequential(_Container):
    """Layers applied in order: ``Sequential(Conv2d(...), ReLU(), ...)`` or with names,
    ``Sequential(("features", ...), ("head", ...))``.
    """

    prefix = "sequential"

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], list):
            layers = tuple(layers[0])
        explicit = set()
        entries = []
        for i, item in enumerate(layers):
            if isinstance(item, Layer):
                entries.append((None, item))
            elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Layer)):
                name = _check_name("Sequential", item[0])
                if name in explicit:
                    raise ValueError(f"Sequential: the name {name!r} is given twice")
                explicit.add(name)
                entries.append((name, item[1]))
            else:
                raise TypeError(f"Sequential: argument {i} must be a Layer or a (name, Layer) pair, "
                                f"got {type(item).__name__}")
        counters = {}
        named = []
        for name, layer in entries:
            if name is None:
                counters[layer.prefix] = counters.get(layer.prefix, 0) + 1
                name = f"{layer.prefix}{counters[layer.prefix]}"
                if name in explicit:
                    raise ValueError(f"Sequential: the automatic name {name!r} clashes with a given name")
            named.append((name, layer))
        self._named = named
        self._out_shape = None

    def _children(self):
        return self._named

    @property
    def layers(self):
        return [layer for _, layer in self._named]

    @property
    def names(self):
        return [name for name, _ in self._named]

    def named_layers(self):
        return list(self._named)

    def __len__(self):
        return len(self._named)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key):
        if isinstance(key, str):
            for name, layer in self._named:
                if name == key:
                    return layer
            raise KeyError(f"Sequential: no child named {key!r}; children: {self.names}")
        if isinstance(key, slice):  # a view: the same layers (and arrays), their names kept
            return Sequential(*self._named[key])
        return self._named[key][1]

    def forward(self, x, training=True):
        mode = self._mode(training)
        for _, layer in self._named:
            x = layer.forward(x, training=mode)
        self._out_shape = np.shape(x)
        return x

    def backward(self, dy):
        if self._out_shape is None:
            raise RuntimeError("Sequential.backward called before forward (nothing to differentiate)")
        for _, layer in reversed(self._named):
            dy = layer.backward(dy)
        return dy

    def config(self):
        return {"type": "Sequential", "layers": [[name, layer.config()] for name, layer in self._named]}

    @classmethod
    def _from_config(cls, kwargs):
        layers = kwargs.get("layers")
        if not isinstance(layers, list):
            raise ValueError("from_config: a Sequential config needs a 'layers' list of [name, config] pairs")
        return cls(*[(name, from_config(cfg)) for name, cfg in layers])

    def __repr__(self):
        inner = "".join(f"\n  ({name}): " + repr(layer).replace("\n", "\n  ") for name, layer in self._named)
        return f"Sequential({inner}\n)"


@register
class Residual(_Container):
    """The course's residual block: ``act(main(x) + shortcut(x))``.

    ``shortcut=None`` is the identity block (``act(main(x) + x)``); a layer (in the
    course, a strided Conv2d followed by BatchNorm) makes the convolutional block.
    The ReLU after the sum is part of the block, as in the course (``activation=None``
    leaves it out). Children are named ``main`` and ``shortcut``.
    """

    prefix = "block"

    def __init__(self, main, shortcut=None, activation="relu"):
        super().__init__()
        if isinstance(main, list):
            main = Sequential(*main)
        if isinstance(shortcut, list):
            shortcut = Sequential(*shortcut)
        if not isinstance(main, Layer):
            raise TypeError(f"Residual: main must be a Layer, got {type(main).__name__}")
        if shortcut is not None and not isinstance(shortcut, Layer):
            raise TypeError(f"Residual: shortcut must be a Layer or None, got {type(shortcut).__name__}")
        self.main = main
        self.shortcut = shortcut
        self.activation = check_choice("Residual", "activation", activation,
                                       (None, "relu", "leaky_relu", "sigmoid", "tanh"))
        self._cache = None
        self._out_shape = None

    def _children(self):
        if self.shortcut is None:
            return [("main", self.main)]
        return [("main", self.main), ("shortcut", self.shortcut)]

    def forward(self, x, training=True):
        mode = self._mode(training)
        y = self.main.forward(x, training=mode)
        s = np.asarray(x) if self.shortcut is None else self.shortcut.forward(x, training=mode)
        if y.shape != s.shape:
            which = "x (identity shortcut)" if self.shortcut is None else "the shortcut's output"
            raise ValueError(f"Residual.forward: main's output has shape {y.shape} but {which} has shape {s.shape}; "
                             "give a shortcut that maps x to main's output shape")
        z = y + s
        if self.activation is None:
            self._cache = None
            out = z
        else:
            out, self._cache = activation_forward(z, self.activation)
        self._out_shape = out.shape
        return out

    def backward(self, dy):
        dy = check_dy("Residual", dy, self._out_shape, None)
        dz = dy if self._cache is None else activation_backward(dy, self._cache)
        dx = self.main.backward(dz)
        ds = dz if self.shortcut is None else self.shortcut.backward(dz)
        return dx + ds

    def config(self):
        return {"type": "Residual", "main": self.main.config(),
                "shortcut": None if self.shortcut is None else self.shortcut.config(),
                "activation": self.activation}

    @classmethod
    def _from_config(cls, kwargs):
        shortcut = kwargs.get("shortcut")
        return cls(from_config(kwargs["main"]), None if shortcut is None else from_config(shortcut),
                   kwargs.get("activation", "relu"))

    def __repr__(self):
        return (f"Residual(main={self.main!r}, shortcut={self.shortcut!r}, activation={self.activation!r})"
                .replace("\n", "\n  "))
