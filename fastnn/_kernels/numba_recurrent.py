"""Numba RNN / GRU / LSTM kernels, cells and whole sequences, forward and backward.

Layout of the work (n_a hidden units, G = gates * n_a):

* The input half of every gate, ``x @ W_x.T``, is one GEMM over all ``T * m`` rows
  before the time loop; W_x and W_h are used in place as column blocks of W.
* Each step adds ``h_prev @ W_h.T`` for all gates at once (GRU: the update and reset
  gates first, then the candidate, whose product needs ``Γr * h_prev``), then one pass
  over each row applies the bias and the activations and writes what backward needs.
  The pass is split into a few short loops that each touch few arrays: with more,
  LLVM cannot rule out aliasing cheaply and leaves the loop scalar.
* Backward walks the steps in reverse doing only the gate-gradient pass and the GEMM
  that carries ``dh`` to the previous step; ``dz`` of every step is kept, so that
  ``dx``, ``dW`` and ``db`` are a handful of GEMMs/sums over all steps at the end.
* With very few rows per step (latency-bound inference, m = 1) a BLAS call costs more
  than the product, so the per-step products become loops compiled in place.

A cell is a sequence of length 1, so cells and sequences share every kernel. The first
step reads a copy of h0/c0 so that each step function compiles once per dtype (h0 may
be read-only, the later steps' inputs never are). The state a forward returns holds
the output arrays it also returns (as the course's caches do); backward reads only
the parts of them that are not the last step's.

float32 sigmoid/tanh use a vectorisable exp (the libm calls would not vectorise and
would cost as much as the GEMMs); float64 keeps libm's accuracy.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .numba_matmul import gemm, scalars

# At most this many rows per step, the per-step products run as in-kernel loops.
SMALL_M = 4

_JIT = dict(cache=True, error_model="numpy")  # numpy error model: no zero-division branch, so loops vectorise

# ---------------------------------------------------------------------------------------
# activations

_F32 = np.float32
_ZERO, _HALF, _ONE, _TWO = _F32(0), _F32(0.5), _F32(1), _F32(2)
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693145751953125)  # few mantissa bits: k * _LN2_HI is exact
_LN2_LO = _F32(1.4286067653301870e-06)
_EXP_MAX = _F32(88.0)  # 2**k stays a normal float32
_EXP_MIN = _F32(-87.0)
# exp(r) on |r| <= ln2 / 2: Taylor to r**7 leaves ~5e-9 relative
_E2, _E3, _E4, _E5, _E6, _E7 = (_F32(1 / 2), _F32(1 / 6), _F32(1 / 24), _F32(1 / 120),
                                _F32(1 / 720), _F32(1 / 5040))
# tanh(a) for a < 0.25, where 1 - exp(-2a) would cancel: odd Taylor series to a**9
_TANH_SERIES_BELOW = _F32(0.25)
_T3, _T5, _T7, _T9 = _F32(-1 / 3), _F32(2 / 15), _F32(-17 / 315), _F32(62 / 2835)


@intrinsic
def _pow2_f32(typingctx, k):
    """2.0**k as float32 for integer k in [-126, 127], built from its exponent bits."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())
    return types.float32(types.int32), codegen


@njit(error_model="numpy")
def _exp_f32(x):
    # the clamps let NaN through (comparisons with NaN are false)
    x = _EXP_MAX if x > _EXP_MAX else x
    x = _EXP_MIN if x < _EXP_MIN else x
    k = np.floor(x * _LOG2E + _HALF)
    k = k if k == k else _ZERO  # NaN stays in r; keep the int conversion defined
    r = x - k * _LN2_HI - k * _LN2_LO
    p = _ONE + r * (_ONE + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    return p * _pow2_f32(np.int32(k))


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _tanh(x):
    return math.tanh(x)


@overload(_sigmoid)
def _sigmoid_impl(x):
    if x == types.float32:
        def sigmoid_f32(x):
            return _ONE / (_ONE + _exp_f32(-x))
        return sigmoid_f32

    def sigmoid_f64(x):
        return 1.0 / (1.0 + math.exp(-x))
    return sigmoid_f64


@overload(_tanh)
def _tanh_impl(x):
    if x == types.float32:
        def tanh_f32(x):
            a = abs(x)
            e = _exp_f32(-_TWO * a)
            t = (_ONE - e) / (_ONE + e)
            s = a * a
            series = a * (_ONE + s * (_T3 + s * (_T5 + s * (_T7 + s * _T9))))
            t = series if a < _TANH_SERIES_BELOW else t
            return -t if x < _ZERO else t
        return tanh_f32

    def tanh_f64(x):
        return math.tanh(x)
    return tanh_f64


# ---------------------------------------------------------------------------------------
# shared pieces: the products with W_h and the gradients of W and b


@njit(**_JIT)
def _transpose_hidden(W, n_a):
    """W[:, :n_a].T as a contiguous (n_a, rows) array, for the in-kernel step products."""
    rows = W.shape[0]
    WT = np.empty((n_a, rows), W.dtype)
    j0 = 0
    while j0 + 8 <= rows:  # strips of 8 rows: whole cache lines written per pass
        for k in range(n_a):
            wk = WT[k]
            for jj in range(8):
                wk[j0 + jj] = W[j0 + jj, k]
        j0 += 8
    for j in range(j0, rows):
        for k in range(n_a):
            WT[k, j] = W[j, k]
    return WT


@njit(**_JIT)
def _hidden_forward(hp, W, WT, row0, rows, z, col0, small, one_zero):
    """z[:, col0:col0+rows] += hp @ W[row0:row0+rows, :n_a].T   (z is (m, ldz))."""
    m, n_a = hp.shape
    if small:
        # four rows of WT per pass over z: a quarter of the loads and stores of z
        for i in range(m):
            zi = z[i]
            hi = hp[i]
            k = 0
            while k + 4 <= n_a:
                h0, h1, h2, h3 = hi[k], hi[k + 1], hi[k + 2], hi[k + 3]
                w0, w1, w2, w3 = WT[k], WT[k + 1], WT[k + 2], WT[k + 3]
                for j in range(rows):
                    zi[col0 + j] += (h0 * w0[row0 + j] + h1 * w1[row0 + j]
                                     + h2 * w2[row0 + j] + h3 * w3[row0 + j])
                k += 4
            for k in range(k, n_a):
                hk = hi[k]
                wk = WT[k]
                for j in range(rows):
                    zi[col0 + j] += hk * wk[row0 + j]
    else:
        gemm(False, True, m, rows, n_a, hp.reshape(-1), 0, n_a, W.reshape(-1), row0 * W.shape[1],
             W.shape[1], True, z.reshape(-1), col0, z.shape[1], one_zero)


@njit(**_JIT)
def _hidden_backward(dz, col0, rows, W, row0, out, accumulate, small, one_zero):
    """out (=, or += when accumulate) dz[:, col0:col0+rows] @ W[row0:row0+rows, :n_a]."""
    m, n_a = out.shape
    if small:
        if not accumulate:
            out[:] = 0
        for i in range(m):
            oi = out[i]
            di = dz[i]
            j = 0
            while j + 4 <= rows:
                d0, d1, d2, d3 = di[col0 + j], di[col0 + j + 1], di[col0 + j + 2], di[col0 + j + 3]
                w0, w1, w2, w3 = W[row0 + j], W[row0 + j + 1], W[row0 + j + 2], W[row0 + j + 3]
                for k in range(n_a):
                    oi[k] += d0 * w0[k] + d1 * w1[k] + d2 * w2[k] + d3 * w3[k]
                j += 4
            for j in range(j, rows):
                d = di[col0 + j]
                wj = W[row0 + j]
                for k in range(n_a):
                    oi[k] += d * wj[k]
    else:
        gemm(False, False, m, n_a, rows, dz.reshape(-1), col0, dz.shape[1], W.reshape(-1),
             row0 * W.shape[1], W.shape[1], accumulate, out.reshape(-1), 0, n_a, one_zero)


@njit(**_JIT)
def _parameter_grads(dz, x, W, one_zero):
    """dx = dz @ W_x, dW_x = dz^T @ x, db = column sums of dz; dz is (T, m, G).

    dW's W_h block is left to the caller, which knows what multiplied it.
    """
    T, m, G = dz.shape
    n_x = x.shape[2]
    ld = W.shape[1]
    n_a = ld - n_x
    rows = T * m
    dzf = dz.reshape(-1)
    dx = np.empty(x.shape, dz.dtype)
    gemm(False, False, rows, n_x, G, dzf, 0, G, W.reshape(-1), n_a, ld, False, dx.reshape(-1), 0, n_x,
         one_zero)
    dW = np.empty((G, ld), dz.dtype)
    gemm(True, False, G, n_x, rows, dzf, 0, G, x.reshape(-1), 0, n_x, False, dW.reshape(-1), n_a, ld,
         one_zero)
    db = np.zeros(G, dz.dtype)
    dz2 = dz.reshape(rows, G)
    for r in range(rows):
        d = dz2[r]
        for j in range(G):
            db[j] += d[j]
    return dx, dW, db


@njit(**_JIT)
def _hidden_weight_grad(dz, col0, rows, h0, h, dW, row0, one_zero):
    """dW[row0:row0+rows, :n_a] = sum_t dz[t][:, col0:col0+rows]^T @ h_prev<t>, h_prev<0> = h0."""
    T, m, G = dz.shape
    n_a = h0.shape[1]
    ld = dW.shape[1]
    dzf = dz.reshape(-1)
    dWf = dW.reshape(-1)
    gemm(True, False, rows, n_a, m, dzf, col0, G, h0.reshape(-1), 0, n_a, False, dWf, row0 * ld, ld,
         one_zero)
    gemm(True, False, rows, n_a, (T - 1) * m, dzf, m * G + col0, G, h.reshape(-1), 0, n_a, True, dWf,
         row0 * ld, ld, one_zero)


@njit(**_JIT)
def _project_inputs(x, W, G):
    """(T, m, G) array holding x @ W_x.T for every step."""
    T, m, n_x = x.shape
    ld = W.shape[1]
    z = np.empty((T, m, G), x.dtype)
    gemm(False, True, T * m, G, n_x, x.reshape(-1), 0, n_x, W.reshape(-1), ld - n_x, ld, False,
         z.reshape(-1), 0, G, scalars(z))
    return z


def _small_forward(m, T):
    # the transposed copy of W_h the in-kernel products read only pays off over several steps
    return m <= SMALL_M and T > 1


# ---------------------------------------------------------------------------------------
# RNN


@njit(**_JIT)
def _rnn_step(z, hp, W, WT, b, h_out, relu, small, one_zero):
    m, n_a = hp.shape
    zero = one_zero[1]
    _hidden_forward(hp, W, WT, 0, n_a, z, 0, small, one_zero)
    for i in range(m):
        zi = z[i]
        hi = h_out[i]
        if relu:
            for j in range(n_a):
                v = zi[j] + b[j]
                hi[j] = zero if v < zero else v  # written so that NaN passes
        else:
            for j in range(n_a):
                hi[j] = _tanh(zi[j] + b[j])


@njit(**_JIT)
def _rnn_forward(x, h0, W, b, relu, small):
    T, m, _ = x.shape
    n_a = h0.shape[1]
    one_zero = scalars(x)
    z = _project_inputs(x, W, n_a)
    WT = _transpose_hidden(W, n_a) if small else np.empty((0, 0), x.dtype)
    h = np.empty((T, m, n_a), x.dtype)
    _rnn_step(z[0], h0.copy(), W, WT, b, h[0], relu, small, one_zero)
    for t in range(1, T):
        _rnn_step(z[t], h[t - 1], W, WT, b, h[t], relu, small, one_zero)
    return h


@njit(**_JIT)
def _rnn_backward(dh, x, h0, W, h, relu, small):
    T, m, n_a = dh.shape
    one_zero = scalars(dh)
    dz = np.empty((T, m, n_a), dh.dtype)
    carry = np.zeros((m, n_a), dh.dtype)
    one, zero = one_zero[0], one_zero[1]  # typed constants keep float32 loops in float32
    for t in range(T - 1, -1, -1):
        for i in range(m):
            dzi = dz[t, i]
            hi = h[t, i]
            dhi = dh[t, i]
            ci = carry[i]
            if relu:
                for j in range(n_a):
                    dzi[j] = dhi[j] + ci[j] if hi[j] > zero else zero
            else:
                for j in range(n_a):
                    dzi[j] = (dhi[j] + ci[j]) * (one - hi[j] * hi[j])
        _hidden_backward(dz[t], 0, n_a, W, 0, carry, False, small, one_zero)
    dx, dW, db = _parameter_grads(dz, x, W, one_zero)
    _hidden_weight_grad(dz, 0, n_a, h0, h, dW, 0, one_zero)
    return dx, carry, dW, db


def rnn_forward(x, h0, W, b, activation):
    relu = activation == "relu"
    h = _rnn_forward(x, h0, W, b, relu, _small_forward(x.shape[1], x.shape[0]))
    return h, (x, h0, W, h, relu)


def rnn_backward(dh, state):
    x, h0, W, h, relu = state
    return _rnn_backward(dh, x, h0, W, h, relu, dh.shape[1] <= SMALL_M)


def rnn_cell_forward(x_t, h_prev, W, b, activation):
    h, state = rnn_forward(x_t.reshape((1,) + x_t.shape), h_prev, W, b, activation)
    return h[0], state


def rnn_cell_backward(dh_next, state):
    dx, dh_prev, dW, db = rnn_backward(dh_next.reshape((1,) + dh_next.shape), state)
    return dx[0], dh_prev, dW, db


# ---------------------------------------------------------------------------------------
# GRU: gate blocks [u, r, c]; the state keeps Γu, Γr, c̃ (in z) and Γr * h_prev.


@njit(**_JIT)
def _gru_step(z, hp, W, WT, b, rh, h_out, small, one_zero):
    m, n_a = hp.shape
    one = one_zero[0]
    _hidden_forward(hp, W, WT, 0, 2 * n_a, z, 0, small, one_zero)
    for i in range(m):
        zi = z[i]
        hpi = hp[i]
        rhi = rh[i]
        for j in range(2 * n_a):
            zi[j] = _sigmoid(zi[j] + b[j])
        for j in range(n_a):
            rhi[j] = zi[n_a + j] * hpi[j]
    _hidden_forward(rh, W, WT, 2 * n_a, n_a, z, 2 * n_a, small, one_zero)
    for i in range(m):
        zi = z[i]
        hpi = hp[i]
        hi = h_out[i]
        for j in range(n_a):
            zi[2 * n_a + j] = _tanh(zi[2 * n_a + j] + b[2 * n_a + j])
        for j in range(n_a):
            u = zi[j]
            hi[j] = u * zi[2 * n_a + j] + (one - u) * hpi[j]


@njit(**_JIT)
def _gru_forward(x, h0, W, b, small):
    T, m, _ = x.shape
    n_a = h0.shape[1]
    one_zero = scalars(x)
    z = _project_inputs(x, W, 3 * n_a)
    WT = _transpose_hidden(W, n_a) if small else np.empty((0, 0), x.dtype)
    h = np.empty((T, m, n_a), x.dtype)
    rh = np.empty((T, m, n_a), x.dtype)
    _gru_step(z[0], h0.copy(), W, WT, b, rh[0], h[0], small, one_zero)
    for t in range(1, T):
        _gru_step(z[t], h[t - 1], W, WT, b, rh[t], h[t], small, one_zero)
    return h, z, rh


@njit(**_JIT)
def _gru_back_step(dh, z, hp, dz, carry, drh, W, small, one_zero):
    m, n_a = hp.shape
    one = one_zero[0]
    for i in range(m):
        zi = z[i]
        dzi = dz[i]
        hpi = hp[i]
        dhi = dh[i]
        ci = carry[i]
        for j in range(n_a):
            ci[j] += dhi[j]
        for j in range(n_a):
            d = ci[j]
            u = zi[j]
            c = zi[2 * n_a + j]
            dzi[2 * n_a + j] = d * u * (one - c * c)
            dzi[j] = d * (c - hpi[j]) * u * (one - u)
    _hidden_backward(dz, 2 * n_a, n_a, W, 2 * n_a, drh, False, small, one_zero)
    for i in range(m):
        zi = z[i]
        dzi = dz[i]
        hpi = hp[i]
        ci = carry[i]
        dri = drh[i]
        for j in range(n_a):
            r = zi[n_a + j]
            dzi[n_a + j] = dri[j] * hpi[j] * r * (one - r)
            ci[j] = ci[j] * (one - zi[j]) + dri[j] * r
    _hidden_backward(dz, 0, 2 * n_a, W, 0, carry, True, small, one_zero)


@njit(**_JIT)
def _gru_backward(dh, x, h0, W, h, z, rh, small):
    T, m, n_a = dh.shape
    one_zero = scalars(dh)
    dz = np.empty((T, m, 3 * n_a), dh.dtype)
    carry = np.zeros((m, n_a), dh.dtype)
    drh = np.empty((m, n_a), dh.dtype)
    for t in range(T - 1, 0, -1):
        _gru_back_step(dh[t], z[t], h[t - 1], dz[t], carry, drh, W, small, one_zero)
    _gru_back_step(dh[0], z[0], h0.copy(), dz[0], carry, drh, W, small, one_zero)
    dx, dW, db = _parameter_grads(dz, x, W, one_zero)
    _hidden_weight_grad(dz, 0, 2 * n_a, h0, h, dW, 0, one_zero)
    ld = W.shape[1]
    gemm(True, False, n_a, n_a, T * m, dz.reshape(-1), 2 * n_a, 3 * n_a, rh.reshape(-1), 0, n_a, False,
         dW.reshape(-1), 2 * n_a * ld, ld, one_zero)
    return dx, carry, dW, db


def gru_forward(x, h0, W, b):
    h, z, rh = _gru_forward(x, h0, W, b, _small_forward(x.shape[1], x.shape[0]))
    return h, (x, h0, W, h, z, rh)


def gru_backward(dh, state):
    x, h0, W, h, z, rh = state
    return _gru_backward(dh, x, h0, W, h, z, rh, dh.shape[1] <= SMALL_M)


def gru_cell_forward(x_t, h_prev, W, b):
    h, state = gru_forward(x_t.reshape((1,) + x_t.shape), h_prev, W, b)
    return h[0], state


def gru_cell_backward(dh_next, state):
    dx, dh_prev, dW, db = gru_backward(dh_next.reshape((1,) + dh_next.shape), state)
    return dx[0], dh_prev, dW, db


# ---------------------------------------------------------------------------------------
# LSTM: gate blocks [f, u, c, o]; the state keeps the activated gates (in z) and c.


@njit(**_JIT)
def _lstm_step(z, hp, cp, W, WT, b, h_out, c_out, small, one_zero):
    m, n_a = hp.shape
    _hidden_forward(hp, W, WT, 0, 4 * n_a, z, 0, small, one_zero)
    # few arrays per loop: LLVM gives up vectorising when too many may alias
    for i in range(m):
        zi = z[i]
        for j in range(2 * n_a):
            zi[j] = _sigmoid(zi[j] + b[j])
        for j in range(n_a):
            zi[2 * n_a + j] = _tanh(zi[2 * n_a + j] + b[2 * n_a + j])
        for j in range(n_a):
            zi[3 * n_a + j] = _sigmoid(zi[3 * n_a + j] + b[3 * n_a + j])
        cpi = cp[i]
        ci = c_out[i]
        hi = h_out[i]
        for j in range(n_a):
            c = zi[j] * cpi[j] + zi[n_a + j] * zi[2 * n_a + j]
            ci[j] = c
            hi[j] = zi[3 * n_a + j] * _tanh(c)


@njit(**_JIT)
def _lstm_forward(x, h0, c0, W, b, small):
    T, m, _ = x.shape
    n_a = h0.shape[1]
    one_zero = scalars(x)
    z = _project_inputs(x, W, 4 * n_a)
    WT = _transpose_hidden(W, n_a) if small else np.empty((0, 0), x.dtype)
    h = np.empty((T, m, n_a), x.dtype)
    c = np.empty((T, m, n_a), x.dtype)
    _lstm_step(z[0], h0.copy(), c0.copy(), W, WT, b, h[0], c[0], small, one_zero)
    for t in range(1, T):
        _lstm_step(z[t], h[t - 1], c[t - 1], W, WT, b, h[t], c[t], small, one_zero)
    return h, c, z


@njit(**_JIT)
def _lstm_back_step(dh, z, cp, c, dz, dh_carry, dc_carry, one):
    m, n_a = cp.shape
    for i in range(m):
        zi = z[i]
        dzi = dz[i]
        dhc = dh_carry[i]
        dcc = dc_carry[i]
        dhi = dh[i]
        for j in range(n_a):
            dhc[j] += dhi[j]
        ci = c[i]
        for j in range(n_a):
            d = dhc[j]
            o = zi[3 * n_a + j]
            t = _tanh(ci[j])  # cheaper recomputed than stored and read back
            dcc[j] += d * o * (one - t * t)
            dzi[3 * n_a + j] = d * t * o * (one - o)
        cpi = cp[i]
        for j in range(n_a):
            k = dcc[j]
            f = zi[j]
            u = zi[n_a + j]
            cc = zi[2 * n_a + j]
            dzi[j] = k * cpi[j] * f * (one - f)
            dzi[n_a + j] = k * cc * u * (one - u)
            dzi[2 * n_a + j] = k * u * (one - cc * cc)
            dcc[j] = k * f


@njit(**_JIT)
def _lstm_backward(dh, dc_last, x, h0, c0, W, h, c, z, small):
    T, m, n_a = dh.shape
    one_zero = scalars(dh)
    dz = np.empty((T, m, 4 * n_a), dh.dtype)
    dh_carry = np.zeros((m, n_a), dh.dtype)
    dc_carry = dc_last.copy()
    for t in range(T - 1, 0, -1):
        _lstm_back_step(dh[t], z[t], c[t - 1], c[t], dz[t], dh_carry, dc_carry, one_zero[0])
        _hidden_backward(dz[t], 0, 4 * n_a, W, 0, dh_carry, False, small, one_zero)
    _lstm_back_step(dh[0], z[0], c0.copy(), c[0], dz[0], dh_carry, dc_carry, one_zero[0])
    _hidden_backward(dz[0], 0, 4 * n_a, W, 0, dh_carry, False, small, one_zero)
    dx, dW, db = _parameter_grads(dz, x, W, one_zero)
    _hidden_weight_grad(dz, 0, 4 * n_a, h0, h, dW, 0, one_zero)
    return dx, dh_carry, dc_carry, dW, db


def lstm_forward(x, h0, c0, W, b):
    h, c, z = _lstm_forward(x, h0, c0, W, b, _small_forward(x.shape[1], x.shape[0]))
    return h, c[-1], (x, h0, c0, W, h, c, z)


def lstm_backward(dh, dc_last, state):
    x, h0, c0, W, h, c, z = state
    return _lstm_backward(dh, dc_last, x, h0, c0, W, h, c, z, dh.shape[1] <= SMALL_M)


def lstm_cell_forward(x_t, h_prev, c_prev, W, b):
    h, c_last, state = lstm_forward(x_t.reshape((1,) + x_t.shape), h_prev, c_prev, W, b)
    return h[0], c_last, state


def lstm_cell_backward(dh_next, dc_next, state):
    dx, dh_prev, dc_prev, dW, db = lstm_backward(dh_next.reshape((1,) + dh_next.shape), dc_next, state)
    return dx[0], dh_prev, dc_prev, dW, db
