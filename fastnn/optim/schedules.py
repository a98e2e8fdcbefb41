"""Learning-rate schedules: each returns a callable ``epoch -> lr``.

The course's decay formulas (course 2, "learning rate decay"). The caller sets the
optimizer's ``lr`` attribute from one between epochs (``opt.lr = schedule(epoch)``,
or ``Model.fit(..., schedule=)``). Epochs are numbers >= 0 (ints, or fractions of an
epoch); the learning rate comes back as a float.
"""
import math
import numbers

import numpy as np

from .. import _args as A

__all__ = ["inverse_time", "exponential", "inverse_sqrt", "step"]


class _Schedule:
    """A learning rate as a function of the epoch, with a repr that says which."""

    _name = ""
    _least_epoch = 0.0

    def __init__(self, **params):
        self._params = params

    def __call__(self, epoch):
        if isinstance(epoch, (bool, np.bool_)) or not isinstance(epoch, (numbers.Real, np.integer, np.floating)) \
                or not math.isfinite(float(epoch)) or epoch < self._least_epoch:
            raise ValueError(f"{self!r}: epoch must be a finite number >= {self._least_epoch:g}, got {epoch!r}")
        return float(self._rate(epoch))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{self._name}({args})"


class _InverseTime(_Schedule):
    _name = "inverse_time"
    def _rate(self, epoch):
        p = self._params
        return p["lr0"] / (1 + p["decay_rate"] * epoch)


class _Exponential(_Schedule):
    _name = "exponential"
    def _rate(self, epoch):
        p = self._params
        return p["lr0"] * p["base"] ** epoch


class _InverseSqrt(_Schedule):
    _name = "inverse_sqrt"
    _least_epoch = 1.0

    def _rate(self, epoch):
        p = self._params
        return p["lr0"] * p["k"] / math.sqrt(epoch)


class _Step(_Schedule):
    _name = "step"
    def _rate(self, epoch):
        p = self._params
        return p["lr0"] * p["drop"] ** (epoch // p["every"])


def inverse_time(lr0, decay_rate):
    """lr0 / (1 + decay_rate * epoch): the course's learning-rate decay (lr0 = 0.2 and
    decay_rate = 1 give 0.1, 0.0667, 0.05, 0.04 at epochs 1..4)."""
    fn = "inverse_time"
    return _InverseTime(lr0=A.real(fn, "lr0", lr0, low=0), decay_rate=A.real(fn, "decay_rate", decay_rate, low=0))


def exponential(lr0, base=0.95):
    """lr0 * base**epoch: exponential decay (base in (0, 1])."""
    fn = "exponential"
    return _Exponential(lr0=A.real(fn, "lr0", lr0, low=0), base=A.real(fn, "base", base, low=0, high=1, low_open=True))


def inverse_sqrt(lr0, k):
    """lr0 * k / sqrt(epoch), for epochs >= 1 (an epoch below 1 is a ValueError)."""
    fn = "inverse_sqrt"
    return _InverseSqrt(lr0=A.real(fn, "lr0", lr0, low=0), k=A.real(fn, "k", k, low=0, low_open=True))


def step(lr0, drop, every):
    """lr0 * drop**(epoch // every): the discrete staircase (drop 0.5 halves the rate
    every `every` epochs; drop in (0, 1], every an int >= 1)."""
    fn = "step"
    return _Step(lr0=A.real(fn, "lr0", lr0, low=0), drop=A.real(fn, "drop", drop, low=0, high=1, low_open=True),
                 every=A.as_int(fn, "every", every, 1))
