"""A small cache of large buffers, reused from call to call.

A recurrent forward or backward on a large batch allocates tens of megabytes of
state and scratch (L3 of the benchmark: 74 MiB for the forward's caches). Freed
and allocated again at every call, such a block goes back to the operating system
and every page of it is faulted in afresh: about 10 % of the call on a quiet
machine, and several times that where the host has reclaimed the pages (virtual
machines). Blocks taken from here stay mapped instead.

A block is handed out as a view; it is free again once no array refers to it any
more (its reference count drops back to the cache's own), so an array returned to
a caller keeps its memory for as long as the caller keeps it. At most
``_LIMIT_BYTES`` of blocks are remembered, the least recently used forgotten
first; requests under ``_MIN_BYTES`` go straight to NumPy.
"""
import math
import sys
import threading

import numpy as np

_MIN_BYTES = 1 << 20
_LIMIT_BYTES = 256 << 20
_ALIGN = 64

_lock = threading.Lock()
_blocks = []  # 1-D uint8 arrays owning their memory, least recently used first


def _refs(blocks, i):
    return sys.getrefcount(blocks[i])


def _calibrate():
    probe = [np.empty(1, dtype=np.uint8)]
    return _refs(probe, 0)


# the reference count of a block that nothing but the cache refers to
_FREE_REFS = _calibrate()


def _take(nbytes):
    """A free cached block of at least nbytes (at most twice that), or a new one."""
    best = -1
    for i in range(len(_blocks)):
        size = _blocks[i].shape[0]
        if nbytes <= size <= 2 * nbytes and _refs(_blocks, i) == _FREE_REFS:
            if best < 0 or size < _blocks[best].shape[0]:
                best = i
    if best >= 0:
        block = _blocks.pop(best)
    else:
        block = np.empty(nbytes + _ALIGN, dtype=np.uint8)
        total = nbytes + _ALIGN + sum(b.shape[0] for b in _blocks)
        while _blocks and total > _LIMIT_BYTES:
            total -= _blocks.pop(0).shape[0]  # forgotten: freed once its users let go
        if nbytes + _ALIGN > _LIMIT_BYTES:
            return block
    _blocks.append(block)
    return block


def empty(shape, dtype):
    """Like ``np.empty(shape, dtype)`` (C order, 64-byte aligned when large), from the cache."""
    dtype = np.dtype(dtype)
    if isinstance(shape, tuple):
        nbytes = dtype.itemsize * math.prod(shape)
    else:
        nbytes = dtype.itemsize * int(shape)
        shape = (int(shape),)
    if nbytes < _MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    with _lock:
        block = _take(nbytes)
    start = -block.ctypes.data % _ALIGN
    return block[start:start + nbytes].view(dtype).reshape(shape)


def clear():
    """Forget every cached block (those still in use are freed when their users let go)."""
    with _lock:
        _blocks.clear()


def cached_bytes():
    with _lock:
        return sum(b.shape[0] for b in _blocks)
