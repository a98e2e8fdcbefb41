"""The search space's vocabulary: uniform, loguniform, choice (and intuniform), and the
draw of one trial's parameters as a function of (seed, trial index) only.

The course's way (course 2, week 3): sample at random rather than on a grid, and on
the log scale for rates: ``r = uniform(log10 low, log10 high); alpha = 10 ** r``.
"""
import math
import numbers

import numpy as np

__all__ = ["uniform", "loguniform", "choice", "intuniform", "Distribution", "check_space", "trial_params",
           "trial_seed"]


def _real(fn, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{fn}: {name} must be a finite real number, got {value!r}")
    return float(value)


class Distribution:
    """One entry of a search space: ``sample(rng)`` draws a JSON-ready value."""

    def sample(self, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def contains(self, value):  # pragma: no cover - abstract
        raise NotImplementedError


class uniform(Distribution):
    """A real number uniform on [low, high)."""

    def __init__(self, low, high):
        fn = "fastnn.distributed.uniform"
        self.low, self.high = _real(fn, "low", low), _real(fn, "high", high)
        if not self.low < self.high:
            raise ValueError(f"{fn}: low must be < high, got low={low!r}, high={high!r}")

    def sample(self, rng):
        return float(rng.uniform(self.low, self.high))

    def contains(self, value):
        return isinstance(value, float) and self.low <= value <= self.high

    def __repr__(self):
        return f"uniform({self.low!r}, {self.high!r})"


class loguniform(Distribution):
    """A positive real number whose log10 is uniform on [log10 low, log10 high): the
    course's scale for learning rates (1e-4 .. 1e-1 puts as many draws in each decade)."""

    def __init__(self, low, high):
        fn = "fastnn.distributed.loguniform"
        self.low, self.high = _real(fn, "low", low), _real(fn, "high", high)
        if self.low <= 0 or self.high <= 0:
            raise ValueError(f"{fn}: both bounds must be > 0 (the log of a non-positive number is undefined), "
                             f"got low={low!r}, high={high!r}")
        if not self.low < self.high:
            raise ValueError(f"{fn}: low must be < high, got low={low!r}, high={high!r}")

    def sample(self, rng):
        r = rng.uniform(math.log10(self.low), math.log10(self.high))
        return float(min(max(10.0 ** r, self.low), self.high))

    def contains(self, value):
        return isinstance(value, float) and self.low <= value <= self.high

    def __repr__(self):
        return f"loguniform({self.low!r}, {self.high!r})"


class intuniform(Distribution):
    """An integer uniform on low .. high, both included (layer widths, epochs)."""

    def __init__(self, low, high):
        fn = "fastnn.distributed.intuniform"
        for name, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
                raise ValueError(f"{fn}: {name} must be an integer, got {v!r}")
        self.low, self.high = int(low), int(high)
        if not self.low <= self.high:
            raise ValueError(f"{fn}: low must be <= high, got low={low!r}, high={high!r}")

    def sample(self, rng):
        return int(rng.integers(self.low, self.high + 1))

    def contains(self, value):
        return isinstance(value, int) and self.low <= value <= self.high

    def __repr__(self):
        return f"intuniform({self.low!r}, {self.high!r})"


_JSON_SCALARS = (str, bool, int, float, type(None))


class choice(Distribution):
    """One of a list of options, each equally likely; options are JSON scalars
    (numbers, strings, booleans, None) so the results file records them exactly."""

    def __init__(self, options):
        fn = "fastnn.distributed.choice"
        if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
            raise ValueError(f"{fn}: options must be a list of values, got {options!r}")
        options = list(options)
        if not options:
            raise ValueError(f"{fn}: options must not be empty")
        clean = []
        for o in options:
            if isinstance(o, np.generic):
                o = o.item()
            if not isinstance(o, _JSON_SCALARS) or (isinstance(o, float) and not math.isfinite(o)):
                raise ValueError(f"{fn}: every option must be a JSON scalar (number, str, bool, None), got "
                                 f"{o!r} of type {type(o).__name__}")
            clean.append(o)
        self.options = clean

    def sample(self, rng):
        return self.options[int(rng.integers(len(self.options)))]

    def contains(self, value):
        return any(type(value) is type(o) and value == o for o in self.options)

    def __repr__(self):
        return f"choice({self.options!r})"


_BY_NAME = {"uniform": uniform, "loguniform": loguniform, "intuniform": intuniform, "choice": choice}


def check_space(fn, space):
    """The space as a dict name -> Distribution, in sorted order of names. Entries may
    be Distribution instances or tuples ("loguniform", 1e-4, 1e-1) / ("choice", [32, 64])."""
    if not isinstance(space, dict):
        raise ValueError(f"{fn}: space must be a dict name -> distribution (uniform, loguniform, choice, "
                         f"intuniform), got {type(space).__name__}")
    if not space:
        raise ValueError(f"{fn}: space is empty ({{}}); give at least one hyperparameter, e.g. "
                         f"{{'lr': loguniform(1e-4, 1e-1)}}")
    out = {}
    for name in sorted(space):
        spec = space[name]
        if not isinstance(name, str):
            raise ValueError(f"{fn}: space keys must be strings, got {name!r}")
        if isinstance(spec, Distribution):
            out[name] = spec
            continue
        if isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str):
            kind = _BY_NAME.get(spec[0])
            if kind is None:
                raise ValueError(f"{fn}: space[{name!r}] names an unknown distribution {spec[0]!r} (known: "
                                 f"{', '.join(_BY_NAME)})")
            try:
                out[name] = kind(*spec[1:])
            except ValueError as exc:
                raise ValueError(f"{fn}: space[{name!r}] = {spec!r}: {exc}") from None
            except TypeError as exc:
                raise ValueError(f"{fn}: space[{name!r}] = {spec!r} has the wrong arguments for {spec[0]} "
                                 f"({exc})") from None
            continue
        raise ValueError(f"{fn}: space[{name!r}] is not a distribution: got {spec!r} (use uniform(low, high), "
                         f"loguniform(low, high), intuniform(low, high), choice([...]) or a fixed value as "
                         f"choice([value]))")
    return out


def _sequence(seed, index, stream):
    return np.random.SeedSequence(entropy=seed, spawn_key=(index, stream))


def trial_params(space, seed, index):
    """The parameters of trial `index` of a search seeded `seed`: a function of (seed,
    index) and the space only, so they are the same whatever order trials run in.
    `space` is the output of check_space (names in sorted order)."""
    rng = np.random.default_rng(_sequence(seed, index, 0))
    return {name: dist.sample(rng) for name, dist in space.items()}


def trial_seed(seed, index):
    """The seed of trial `index`'s initial weights and shuffling (a 32-bit int)."""
    return int(_sequence(seed, index, 1).generate_state(1)[0])
