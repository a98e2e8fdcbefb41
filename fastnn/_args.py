"""The one place where user arguments become normalised ones.

Every public function validates and normalises here — dtype promotion, layouts,
stride/dilation pairs, the padding forms, output sizes — and every error a user can
provoke is raised here, as a ValueError/TypeError naming the function, the
parameter and the offending values. Kernels receive only what passes.
"""
import functools
import math
import numbers
import os

import numpy as np

LAYOUTS = ("NHWC", "NCHW")


# ---------------------------------------------------------------- arrays and dtypes

_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
F32, F64 = _NATIVE_FLOATS


def float_dtype(fn, name, arr):
    """The float dtype an input asks for, or a TypeError for non-real data."""
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize <= 2:
            return np.dtype(np.float32)  # float16 computes in float32
        if arr.dtype.itemsize == 4:
            return np.dtype(np.float32)
        return np.dtype(np.float64)  # float64 and longdouble
    if kind in "iub":
        return np.dtype(np.float64)
    raise TypeError(
        f"{fn}: {name} must hold real numbers (float, int or bool), got dtype {arr.dtype}"
    )


def as_arrays(fn, optional=(), **values):
    """np.asarray every value; return (arrays dict, common float dtype).

    Only the names in `optional` may be None (they stay None). float32 stays float32,
    float64 stays float64, a mix computes in float64; integers and bools become
    float64; complex, object and string data are a TypeError.
    """
    arrays, dtype = as_array_list(fn, tuple(values), tuple(values.values()), optional)
    return dict(zip(values, arrays)), dtype


def as_array_list(fn, names, values, optional=()):
    """as_arrays for parallel sequences of names and values: (list of arrays, dtype)."""
    arrays = []
    dtypes = []
    for name, value in zip(names, values):
        # the common case, without the general checks: NumPy hands out one dtype
        # object per native float type (an equal but distinct one takes the long way)
        if type(value) is np.ndarray and (value.dtype is F32 or value.dtype is F64):
            arrays.append(value)
            dtypes.append(value.dtype)
            continue
        if value is None:
            if name not in optional:
                raise TypeError(f"{fn}: {name} must be an array, got None")
            arrays.append(None)
            continue
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise TypeError(f"{fn}: {name} cannot be read as a numeric array ({exc})") from None
        dtypes.append(float_dtype(fn, name, arr))
        arrays.append(arr)
    if dtypes and dtypes.count(dtypes[0]) == len(dtypes):
        return arrays, dtypes[0]
    dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
    return arrays, dtype


def contiguous(arr, dtype):
    """A C-contiguous, native-byte-order array of `dtype` (no copy when `arr` already is one)."""
    if arr is None:
        return None
    return np.ascontiguousarray(arr, dtype=dtype)


def check_ndim(fn, name, arr, ndim, shape_doc):
    if arr.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D {shape_doc}, got shape {arr.shape}")


def check_layout(fn, layout):
    if layout not in LAYOUTS:
        raise ValueError(f"{fn}: layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def to_nhwc(arr, layout):
    """View an NCHW activation as NHWC (a view; `contiguous` copies it once)."""
    return arr if layout == "NHWC" else arr.transpose(0, 2, 3, 1)


def from_nhwc(arr, layout):
    """Give an NHWC result back in the caller's layout, C-contiguous."""
    return arr if layout == "NHWC" else np.ascontiguousarray(arr.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------- scalar parameters

# Geometry integers reach the kernels as C integers (ssize_t, int64) and are
# multiplied there; beyond this bound they could overflow instead of being used.
MAX_GEOMETRY = 2**31 - 1


def _is_int(value):
    if type(value) is int:  # the common case, without the abstract-class check's cost
        return True
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_max(fn, name, values, original):
    if max(values) > MAX_GEOMETRY:
        raise ValueError(f"{fn}: {name} must be at most {MAX_GEOMETRY}, got {original!r}")


def as_int(fn, name, value, minimum):
    if not _is_int(value):
        raise ValueError(f"{fn}: {name} must be an int, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    _check_max(fn, name, (value,), value)
    return value


def pair(fn, name, value, minimum=1):
    """int or (a, b) -> (a, b) of ints >= minimum."""
    if _is_int(value):
        items = (value, value)
    elif isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2 and all(_is_int(v) for v in value):
        items = tuple(value)
    else:
        raise ValueError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    items = tuple(int(v) for v in items)
    if min(items) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    _check_max(fn, name, items, value)
    return items


def choice(fn, name, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{fn}: {name} must be one of {tuple(options)}, got {value!r}")
    return value


def flag(fn, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{fn}: {name} must be True or False, got {value!r}")
    return bool(value)


def real(fn, name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real scalar within [low, high] (an open end where low_open / high_open)
    -> float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{fn}: {name} must be a real number, got {value!r}")
    value = float(value)
    bad = not math.isfinite(value)
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        span = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{fn}: {name} must be a finite number in {span}, got {value!r}")
    return value


def generator(fn, name, rng):
    """A np.random.Generator from a Generator (used as it is, so that the next call
    draws what follows), a seed (int or None) or a SeedSequence."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or _is_int(rng) or isinstance(rng, np.random.SeedSequence):
        if _is_int(rng) and int(rng) < 0:
            raise ValueError(f"{fn}: {name} as a seed must be >= 0, got {rng!r}")
        return np.random.default_rng(rng)
    raise TypeError(f"{fn}: {name} must be a numpy.random.Generator, a seed (int) or None, "
                    f"got {type(rng).__name__}")


def indices(fn, name, value, upper, what):
    """Integer indices in [0, upper) -> a C-contiguous int64 array (a TypeError for
    non-integer data, a ValueError naming the first offending value and its position)."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{fn}: {name} cannot be read as an integer array ({exc})") from None
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name} must hold integers ({what}), got dtype {arr.dtype}")
    # the range is checked before the conversion, so that a uint64 of 2**63 or more is
    # reported as itself, not wrapped around to a negative int64
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= upper):
        bad = (arr < 0) | (arr >= upper)
        where = np.unravel_index(int(np.argmax(bad)), arr.shape)
        raise ValueError(f"{fn}: {name} must be in [0, {upper}) ({what}); got {int(arr[where])} at "
                         f"index {tuple(int(i) for i in where)}")
    return np.asarray(arr, dtype=np.int64, order="C")  # a 0-d array stays 0-d


# ---------------------------------------------------------------- convolution geometry

def conv_pads(fn, padding, in_hw, ksize, stride, dilation):
    """Every padding form -> (top, bottom, left, right)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            pads = []
            for n, k, s, d in zip(in_hw, ksize, stride, dilation):
                out = -(-n // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
                pads += [total // 2, total - total // 2]  # odd extra goes bottom/right
            return tuple(pads)
        raise ValueError(f"{fn}: padding must be an int, a pair, ((top, bottom), (left, right)), "
                         f"'valid' or 'same', got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        if not all(len(p) == 2 and all(_is_int(v) for v in p) for p in padding):
            raise ValueError(f"{fn}: padding ((top, bottom), (left, right)) must hold four ints, got {padding!r}")
        pads = (padding[0][0], padding[0][1], padding[1][0], padding[1][1])
    else:
        if not (_is_int(padding) or (isinstance(padding, (tuple, list, np.ndarray)) and len(padding) == 2
                                     and all(_is_int(v) for v in padding))):
            raise ValueError(f"{fn}: padding must be an int, a pair, ((top, bottom), (left, right)), "
                             f"'valid' or 'same', got {padding!r}")
        ph, pw = pair(fn, "padding", padding, minimum=0)
        pads = (ph, ph, pw, pw)
    pads = tuple(int(p) for p in pads)
    if min(pads) < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
    _check_max(fn, "padding", pads, padding)
    return pads


def conv_out_hw(fn, in_hw, pads, ksize, stride, dilation):
    """H_out = floor((H + pad_top + pad_bottom - dh (kh - 1) - 1) / sh) + 1, and the same for W."""
    out = (
        (in_hw[0] + pads[0] + pads[1] - dilation[0] * (ksize[0] - 1) - 1) // stride[0] + 1,
        (in_hw[1] + pads[2] + pads[3] - dilation[1] * (ksize[1] - 1) - 1) // stride[1] + 1,
    )
    if min(out) < 1:
        raise ValueError(
            f"{fn}: output would be empty (H_out, W_out) = {out} for input (H, W) = {tuple(in_hw)}, "
            f"kernel {ksize}, stride {stride}, padding (top, bottom, left, right) = {pads}, dilation {dilation}"
        )
    return out


def check_workspace(fn, backend, n_rows, n_cols, dtype, limit):
    """Fail fast when one image's im2col buffer cannot fit in the workspace limit."""
    if backend == "reference":
        return
    need = n_rows * n_cols * np.dtype(dtype).itemsize
    if need > limit:
        raise ValueError(
            f"{fn}: one image needs a {need / 2**20:.1f} MiB im2col workspace "
            f"({n_rows} x {n_cols} {np.dtype(dtype).name}), above the limit of {limit / 2**20:.1f} MiB; "
            f"raise it with fastnn.set_workspace_limit(nbytes)"
        )


@functools.lru_cache(maxsize=None)
def _memory_bytes():
    """Physical memory of this machine: no single output can be larger."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): the address space bounds it
        return 2**47


def check_output_size(fn, what, shape, dtype):
    """Refuse an output that no machine like this one could hold, before allocating it.

    Without this, NumPy fails with a message that does not name the function, or
    overcommitted memory lets the allocation succeed and the process is killed later.
    """
    need = math.prod(map(int, shape)) * np.dtype(dtype).itemsize
    if need < 1 << 30:
        return  # every machine this runs on has that (and asking costs two system calls)
    have = _memory_bytes()
    if need > have:
        raise ValueError(f"{fn}: {what} of shape {tuple(int(s) for s in shape)} would need {need / 2**30:.4g} GiB, "
                         f"more than this machine's {have / 2**30:.4g} GiB of memory")


# ---------------------------------------------------------------- pooling geometry

def pool_geometry(fn, in_hw, kernel_size, stride, padding, dilation, ceil_mode):
    """-> (ksize, stride, (ph, pw), dilation, out_hw), PyTorch's rules."""
    ksize = pair(fn, "kernel_size", kernel_size)
    stride = ksize if stride is None else pair(fn, "stride", stride)
    pads = pair(fn, "padding", padding, minimum=0)
    dilation = pair(fn, "dilation", dilation)
    ceil_mode = flag(fn, "ceil_mode", ceil_mode)
    out = []
    for n, k, s, p, d in zip(in_hw, ksize, stride, pads, dilation):
        span = d * (k - 1) + 1
        if p > span // 2:
            raise ValueError(
                f"{fn}: padding {pads} must be at most half the (dilated) kernel {ksize} "
                f"(dilation {dilation}), i.e. <= {span // 2} along this axis"
            )
        size = n + 2 * p - span
        o = (-(-size // s) if ceil_mode else size // s) + 1
        if ceil_mode and (o - 1) * s >= n + p:
            o -= 1  # the last window must start inside the input or the left padding
        out.append(o)
    if min(out) < 1:
        raise ValueError(
            f"{fn}: output would be empty (H_out, W_out) = {tuple(out)} for input (H, W) = {tuple(in_hw)}, "
            f"kernel {ksize}, stride {stride}, padding {pads}, dilation {dilation}"
        )
    return ksize, stride, pads, dilation, tuple(out)


# ---------------------------------------------------------------- caches

class Cache:
    """What a forward pass hands to its backward pass. Opaque to users."""

    __slots__ = ("op", "backend", "state", "meta")

    def __init__(self, op, backend, state, **meta):
        self.op = op
        self.backend = backend
        self.state = state
        self.meta = meta

    def __repr__(self):
        return f"<fastnn {self.op} cache ({self.backend} backend)>"


_SCALARS = frozenset((int, float, bool, str, type(None)))


def _owners_in(state):
    """The ids of the owners (_owner) of every array in a state of nested tuples,
    lists and dicts; a loop over a stack, not nested generators, which cost a small
    layer's forward call ten microseconds."""
    owners, stack = set(), [state]
    while stack:
        obj = stack.pop()
        if type(obj) in _SCALARS:
            continue
        if isinstance(obj, np.ndarray):
            owners.add(id(_owner(obj)))
        elif isinstance(obj, (tuple, list)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
    return owners


def owned_outputs(outputs, state):
    """A forward pass's outputs as arrays the caller owns, whatever the backend: an output
    sharing memory with the state its backward pass will read (a backend keeping the
    hidden states it returns in its cache) is copied, so that writing into a result
    (``h *= mask``) changes no gradient on any backend."""
    kept = _owners_in(state)
    return tuple(np.array(y, copy=True) if id(_owner(y)) in kept else y for y in outputs)


def _owner(a):
    """The object that owns an array's memory, at the end of its chain of bases (an
    identity test on owners costs a fraction of np.may_share_memory per pair, which
    showed in a batch-1 LSTM's 100-microsecond call)."""
    base = getattr(a, "base", None)
    while base is not None:
        a, base = base, getattr(base, "base", None)
    return a


def check_cache(fn, cache, op):
    if not isinstance(cache, Cache) or cache.op != op:
        got = repr(cache) if isinstance(cache, Cache) else type(cache).__name__
        raise TypeError(f"{fn}: cache must be the cache returned by {op}_forward, got {got}")
    return cache


def grad_array(fn, name, value, shape):
    """A gradient argument of a backward pass, checked to have the forward output's shape.

    Returned as an array, not yet converted: the caller converts it to the forward's
    dtype (gradients come back in the dtype the forward pass computed in).
    """
    arrays, _ = as_arrays(fn, **{name: value})
    arr = arrays[name]
    if arr.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have the forward output's shape {tuple(shape)}, got {arr.shape}")
    return arr


def bias_vector(fn, name, b, size, what):
    """Any shape holding exactly `size` values -> (size,) (the caller keeps b's shape for db)."""
    if b.size != size:
        raise ValueError(f"{fn}: {name} must hold exactly {size} values ({what}), got shape {b.shape}")
    return b.reshape(size)


def prod(values):
    return math.prod(int(v) for v in values)
