"""Optimizers as fused in-place kernels, and learning-rate schedules.

``SGD`` (the course's momentum, or Nesterov), ``RMSprop`` and ``Adam`` update a list
(or dict) of float32/float64 parameter arrays in place: ``opt.step(grads)`` hands
every array of one dtype to one compiled kernel call, which does the whole update of
each element in one pass. ``opt.lr`` is a plain attribute, set between epochs from a
schedule of :mod:`fastnn.optim.schedules` (a callable ``epoch -> lr``).
"""
from . import schedules
from ._optimizers import SGD, Adam, RMSprop

__all__ = ["SGD", "RMSprop", "Adam", "schedules"]
