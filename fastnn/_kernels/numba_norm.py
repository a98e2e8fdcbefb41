"""Numba batch normalisation kernels (see docs/KERNELS.md).

x arrives as (P, C, S), the channel in the middle: (N * H * W, C, 1) for NHWC and
dense x, (N, C, H * W) for NCHW (and (M, 1, 1) is run as (1, 1, M)). The algorithm
is the cython backend's (fn_norm.h), with the chunks' partial sums kept in float64:

- statistics: each channel's values are cut into chunks fixed by the shape alone
  (rows: about 4096 values' worth of rows, at least 32; planes: 4096 consecutive
  values of the channel in (n, s) order); a chunk takes the corrected two-pass
  algorithm (m = its mean, then d = sum(x - m), q = sum((x - m)^2)) while it is in
  the cache, and the chunks are merged with Chan's update in chunk order, so the
  results do not depend on the thread count;
- y = (x - m_hi) * scale + shift, the double mean split into m_hi (rounded to the
  element type) and m_lo (folded into shift);
- backward: sum(dy) and sum(dy * (x - m_hi)) in one pass over the same chunks, then
  dx = a (dy - mean(dy)) + b (x - m_hi) + e.

Rows loops run over the contiguous channels innermost (LLVM vectorises them);
the sums along a plane's runs may be reassociated, so that LLVM vectorises them too.
"""
import numpy as np
from numba import njit, prange

from .._arena import empty as _empty

_CHUNK = 4096
_SERIAL = 32768


def _chunk_rows(channels):
    return max(32, _CHUNK // max(channels, 1))


def _canon(x):
    p, c, s = x.shape
    return x.reshape(1, 1, p) if s == 1 and c == 1 else x


# ---------------------------------------------------------------- statistics

@njit(cache=True, parallel=True)
def _rows_moments(x, rows_per, pm, pd, pq):
    """Chunk k (rows k * rows_per ...): its mean estimate m, sum(x - m), sum((x - m)^2)."""
    m_rows, chans = x.shape
    for k in prange(pm.shape[0]):
        r0 = k * rows_per
        r1 = min(m_rows, r0 + rows_per)
        inv = 1.0 / (r1 - r0)
        # local accumulators: LLVM knows they alias nothing, and vectorises over c
        m = np.zeros(chans)
        d = np.zeros(chans)
        q = np.zeros(chans)
        for r in range(r0, r1):
            xr = x[r]
            for c in range(chans):
                m[c] += xr[c] * inv
        for r in range(r0, r1):
            xr = x[r]
            for c in range(chans):
                e = xr[c] - m[c]
                d[c] += e
                q[c] += e * e
        pm[k] = m
        pd[k] = d
        pq[k] = q


# Sums along a run of one channel's values (indexed from 0 in a slice: with
# computed offsets LLVM cannot rule out negative, wrapped-around indices and does
# not vectorise the loop). Reassociation lets LLVM vectorise them
# (several partial sums, added at the end): the order of the additions is still
# fixed by the compiled code alone, so it does not depend on the thread count.
_REASSOC = {"reassoc", "nsz"}


@njit(cache=True, fastmath=_REASSOC)
def _run_scaled_sum(row, j0, j1, inv):
    """sum of row[j] * inv"""
    run = row[j0:j1]
    s = 0.0
    for j in range(run.size):
        s += run[j] * inv
    return s


@njit(cache=True, fastmath=_REASSOC)
def _run_deviations(row, j0, j1, m):
    """sum of row[j] - m and of (row[j] - m)^2"""
    run = row[j0:j1]
    d = 0.0
    q = 0.0
    for j in range(run.size):
        e = run[j] - m
        d += e
        q += e * e
    return d, q


@njit(cache=True, fastmath=_REASSOC)
def _run_grad_sums(dr, xr, j0, j1, m):
    """sum of dr[j] and of dr[j] * (xr[j] - m)"""
    druns = dr[j0:j1]
    xruns = xr[j0:j1]
    g = 0.0
    h = 0.0
    for j in range(druns.size):
        d = druns[j]
        g += d
        h += d * (xruns[j] - m)
    return g, h


@njit(cache=True)
def _run_at(pos, hi, size):
    """The run of a plane chunk that starts at value pos of a channel ((n, s) order,
    the chunk ending at hi): its image n, its first value s0 in the plane, and the
    position after it (the run is s0 : s0 + end - pos)."""
    n = pos // size
    return n, pos - n * size, min((n + 1) * size, hi)


@njit(cache=True, parallel=True)
def _plane_moments(x, pm, pd, pq):
    """Partials (C, K): chunk k of channel c is its values [k * 4096, ...) in (n, s) order."""
    n_img, chans, size = x.shape
    total = n_img * size
    n_chunks = pm.shape[1]
    for t in prange(chans * n_chunks):
        c = t // n_chunks
        k = t - c * n_chunks
        lo = k * _CHUNK
        hi = min(total, lo + _CHUNK)
        inv = 1.0 / (hi - lo)
        s = 0.0
        pos = lo
        while pos < hi:
            n, s0, end = _run_at(pos, hi, size)
            s += _run_scaled_sum(x[n, c], s0, s0 + end - pos, inv)
            pos = end
        d = 0.0
        q = 0.0
        pos = lo
        while pos < hi:
            n, s0, end = _run_at(pos, hi, size)
            sd, sq = _run_deviations(x[n, c], s0, s0 + end - pos, s)
            d += sd
            q += sq
            pos = end
        pm[c, k] = s
        pd[c, k] = d
        pq[c, k] = q


@njit(cache=True)
def _merge(pm, pd, pq, length, total, mean, var):
    """Chan's update over the chunks (partials (K, C)) in order; mean and biased var."""
    n_chunks, chans = pm.shape
    mu = np.zeros(chans)
    m2 = np.zeros(chans)
    naive = np.zeros(chans)
    have = 0.0
    for k in range(n_chunks):
        nk = float(min(length, total - k * length))
        inv = 1.0 / nk
        f = nk / (have + nk)
        w = have * f
        for c in range(chans):
            dk = pd[k, c]
            delta = (pm[k, c] + dk * inv) - mu[c]
            mu[c] += delta * f
            m2[c] += (pq[k, c] - dk * dk * inv) + delta * delta * w
            naive[c] += pm[k, c] * nk
        have += nk
    for c in range(chans):
        v = m2[c] / total
        mean[c] = mu[c]
        if mu[c] != mu[c] and np.isinf(naive[c] / total):
            mean[c] = naive[c] / total  # the mean of values holding one infinity
        var[c] = v if not v < 0.0 else 0.0


def _moments(x):
    """(mean, var) in float64 of x (P, C, S), canonical."""
    p, chans, size = x.shape
    total = p * size
    mean = np.empty(chans)
    var = np.empty(chans)
    if size == 1:
        rows_per = _chunk_rows(chans)
        parts = np.empty((3, -(-p // rows_per), chans))
        _rows_moments(x.reshape(p, chans), rows_per, parts[0], parts[1], parts[2])
        _merge(parts[0], parts[1], parts[2], rows_per, total, mean, var)
    else:
        parts = np.empty((3, chans, -(-total // _CHUNK)))
        _plane_moments(x, parts[0], parts[1], parts[2])
        _merge(parts[0].T, parts[1].T, parts[2].T, _CHUNK, total, mean, var)
    return mean, var


# ---------------------------------------------------------------- y = (x - m) * a + b

@njit(cache=True, parallel=True)
def _rows_apply(x, y, m, a, b):
    m_rows, chans = x.shape
    block = max(1, _CHUNK * 8 // max(chans, 1))
    for t in prange((m_rows + block - 1) // block):
        for r in range(t * block, min(m_rows, (t + 1) * block)):
            xr = x[r]
            yr = y[r]
            for c in range(chans):
                yr[c] = (xr[c] - m[c]) * a[c] + b[c]


@njit(cache=True, parallel=True)
def _plane_apply(x, y, m, a, b):
    n_img, chans, size = x.shape
    for q in prange(n_img * chans):
        n = q // chans
        c = q - n * chans
        xr = x[n, c]
        yr = y[n, c]
        mc = m[c]
        ac = a[c]
        bc = b[c]
        for j in range(size):
            yr[j] = (xr[j] - mc) * ac + bc


def _apply(x, m, a, b):
    y = _empty(x.shape, dtype=x.dtype)
    if x.size:
        if x.shape[2] == 1:
            _rows_apply(x.reshape(x.shape[0], x.shape[1]), y.reshape(x.shape[0], x.shape[1]), m, a, b)
        else:
            _plane_apply(x, y, m, a, b)
    return y


# ---------------------------------------------------------------- kernels

def batch_norm_forward(x, gamma, beta, eps):
    shape, x = x.shape, _canon(x)
    dtype = x.dtype
    if x.size == 0:
        empty = np.empty(shape[1], dtype=dtype)
        return _empty(shape, dtype=dtype), empty, empty.copy(), (x, gamma, np.empty(0), np.empty(0))
    mean_d, var_d = _moments(x)
    invstd = 1.0 / np.sqrt(var_d + eps)
    hi = mean_d.astype(dtype)
    scale = gamma.astype(np.float64) * invstd
    shift = beta.astype(np.float64) - (mean_d - hi) * scale
    y = _apply(x, hi, scale.astype(dtype), shift.astype(dtype))
    return y.reshape(shape), hi, var_d.astype(dtype), (x, gamma, mean_d, invstd)


@njit(cache=True, parallel=True)
def _rows_grad_sums(x, dy, rows_per, m, sg, sx):
    m_rows, chans = x.shape
    for k in prange(sg.shape[0]):
        g = sg[k]
        h = sx[k]
        for c in range(chans):
            g[c] = 0.0
            h[c] = 0.0
        for r in range(k * rows_per, min(m_rows, (k + 1) * rows_per)):
            xr = x[r]
            dr = dy[r]
            for c in range(chans):
                d = dr[c]
                g[c] += d
                h[c] += d * (xr[c] - m[c])


@njit(cache=True, parallel=True)
def _plane_grad_sums(x, dy, m, sg, sx):
    n_img, chans, size = x.shape
    total = n_img * size
    n_chunks = sg.shape[1]
    for t in prange(chans * n_chunks):
        c = t // n_chunks
        k = t - c * n_chunks
        hi = min(total, (k + 1) * _CHUNK)
        g = 0.0
        h = 0.0
        pos = k * _CHUNK
        while pos < hi:
            n, s0, end = _run_at(pos, hi, size)
            sg_, sh_ = _run_grad_sums(dy[n, c], x[n, c], s0, s0 + end - pos, m[c])
            g += sg_
            h += sh_
            pos = end
        sg[c, k] = g
        sx[c, k] = h


@njit(cache=True, parallel=True)
def _rows_dx(x, dy, dx, m, a, md, b, e):
    m_rows, chans = x.shape
    block = max(1, _CHUNK * 8 // max(chans, 1))
    for t in prange((m_rows + block - 1) // block):
        for r in range(t * block, min(m_rows, (t + 1) * block)):
            xr = x[r]
            dr = dy[r]
            out = dx[r]
            for c in range(chans):
                out[c] = a[c] * (dr[c] - md[c]) + (b[c] * (xr[c] - m[c]) + e[c])


@njit(cache=True, parallel=True)
def _plane_dx(x, dy, dx, m, a, md, b, e):
    n_img, chans, size = x.shape
    for q in prange(n_img * chans):
        n = q // chans
        c = q - n * chans
        xr = x[n, c]
        dr = dy[n, c]
        out = dx[n, c]
        mc, ac, mdc, bc, ec = m[c], a[c], md[c], b[c], e[c]
        for j in range(size):
            out[j] = ac * (dr[j] - mdc) + (bc * (xr[j] - mc) + ec)


def batch_norm_backward(dy, state):
    x, gamma, mean_d, invstd = state
    dtype = x.dtype
    shape = dy.shape
    if x.size == 0:
        return _empty(shape, dtype=dtype), np.zeros(shape[1], dtype=dtype), np.zeros(shape[1], dtype=dtype)
    dy = dy.reshape(x.shape)
    p, chans, size = x.shape
    total = p * size
    hi = mean_d.astype(dtype)
    if size == 1:
        rows_per = _chunk_rows(chans)
        parts = np.empty((2, -(-p // rows_per), chans))
        _rows_grad_sums(x.reshape(p, chans), dy.reshape(p, chans), rows_per, hi, parts[0], parts[1])
        sums = _ordered_sum(parts)
    else:
        parts = np.empty((2, chans, -(-total // _CHUNK)))
        _plane_grad_sums(x, dy, hi, parts[0], parts[1])
        sums = _ordered_sum(parts.transpose(0, 2, 1))
    sg, sxg = sums[0], sums[1]
    lo = mean_d - hi
    dgamma = (sxg - lo * sg) * invstd
    a = gamma.astype(np.float64) * invstd
    b = -a * invstd * (dgamma / total)
    coef = [v.astype(dtype) for v in (a, sg / total, b, -b * lo)]
    dx = _empty(x.shape, dtype=dtype)
    if size == 1:
        _rows_dx(x.reshape(p, chans), dy.reshape(p, chans), dx.reshape(p, chans), hi, *coef)
    else:
        _plane_dx(x, dy, dx, hi, *coef)
    return dx.reshape(shape), dgamma.astype(dtype), sg.astype(dtype)


@njit(cache=True)
def _ordered_sum(parts):
    """parts (2, K, C) summed over K in order"""
    out = np.zeros((2, parts.shape[2]))
    for i in range(2):
        for k in range(parts.shape[1]):
            for c in range(parts.shape[2]):
                out[i, c] += parts[i, k, c]
    return out


def batch_norm_inference(x, gamma, beta, mean, var, eps):
    shape, x = x.shape, _canon(x)
    dtype = x.dtype
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    y = _apply(x, mean, scale.astype(dtype), beta)
    return y.reshape(shape)
