"""A small cache of large buffers, reused from call to call.

A recurrent forward or backward on a large batch allocates tens of megabytes of
state and scratch (L3 of the benchmark: 74 MiB for the forward's caches). Freed
and allocated again at every call, such a block goes back to the operating system
and every page of it is faulted in afresh: a noticeable part of the call on a
quiet machine, and much more where the host has reclaimed the pages (virtual
machines). Blocks taken from here stay mapped instead.

A block is handed out as a view; it is free again once no array refers to it any
more (its reference count drops back to the cache's own), so an array returned to
a caller keeps its memory for as long as the caller keeps it. At most
``_LIMIT_BYTES`` of blocks are remembered, the least recently used forgotten
first; requests under ``_MIN_BYTES`` go straight to NumPy.

Arrays from the cache start on a 64-byte boundary (a cache line, one AVX-512
vector): NumPy's own allocations are only 16-byte aligned, and a batch-1 LSTM step,
which streams its packed weights from the level-2 cache, runs measurably slower
when their vectors straddle cache lines, depending on where the heap happened
to put them.
"""
import math
import sys
import threading

import numpy as np

_MIN_BYTES = 1 << 16
_LIMIT_BYTES = 256 << 20
_ALIGN = 64

_lock = threading.Lock()
# [block, start] pairs, least recently used first: a 1-D uint8 array owning its
# memory and the offset of its first 64-byte boundary
_blocks = []


def _refs(blocks, i):
    return sys.getrefcount(blocks[i][0])


def _calibrate():
    probe = [[np.empty(1, dtype=np.uint8), 0]]
    return _refs(probe, 0)


# the reference count of a block that nothing but the cache refers to
_FREE_REFS = _calibrate()


def _take(nbytes):
    """A free cached [block, start] of at least nbytes (at most twice that), or a new one."""
    best = -1
    for i in range(len(_blocks)):
        size = _blocks[i][0].shape[0] - _ALIGN
        if nbytes <= size <= 2 * nbytes and _refs(_blocks, i) == _FREE_REFS:
            if best < 0 or size < _blocks[best][0].shape[0] - _ALIGN:
                best = i
    if best >= 0:
        entry = _blocks.pop(best)
    else:
        block = np.empty(nbytes + _ALIGN, dtype=np.uint8)
        entry = [block, -block.ctypes.data % _ALIGN]
        total = nbytes + _ALIGN + sum(b.shape[0] for b, _ in _blocks)
        while _blocks and total > _LIMIT_BYTES:
            total -= _blocks.pop(0)[0].shape[0]  # forgotten: freed once its users let go
        if nbytes + _ALIGN > _LIMIT_BYTES:
            return entry
    _blocks.append(entry)
    return entry


def empty(shape, dtype):
    """Like ``np.empty(shape, dtype)`` (C order), from the cache and 64-byte aligned from
    ``_MIN_BYTES`` up."""
    dtype = np.dtype(dtype)
    if isinstance(shape, tuple):
        nbytes = dtype.itemsize * math.prod(shape)
    else:
        nbytes = dtype.itemsize * int(shape)
        shape = (int(shape),)
    if nbytes < _MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    with _lock:
        block, start = _take(nbytes)
    return block[start:start + nbytes].view(dtype).reshape(shape)


def clear():
    """Forget every cached block (those still in use are freed when their users let go)."""
    with _lock:
        _blocks.clear()


def cached_bytes():
    with _lock:
        return sum(b.shape[0] for b, _ in _blocks)
