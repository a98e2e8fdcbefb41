"""RNN, GRU and LSTM kernels of the cython backend (normalised arguments; docs/KERNELS.md).

Layout: W acts on concat = [h_prev, x_t], so its first n_a columns (row stride
n_a + n_x) are W_h and the rest W_x; products read both blocks in place.

Every product runs on fastnn's own GEMM core (fn_gemm.h, through _fn.pxd) on the
active CPU tier, float32 and float64 alike, from weights packed once per sequence.

Forward of a sequence:
  - LSTM: each step is one fused kernel (fn_lstm.h): the tile of [h_prev, x_t] @ W^T
    holds the four gates of a block of units, and its epilogue writes the gate
    values, c, tanh(c) and h. From a batch of _LSTM_X_IN_STEP_ROWS rows on, the
    step multiplies [h_prev, x_t] by the whole of W; smaller batches take the input
    projection of every step from one product before the time loop (at batch 1 a
    step would read twice the weights, and it is bound by reading them).
  - RNN and GRU: the input projection of every step in one product, x (T*m, n_x) @
    W_x^T + b, written into the buffer that will hold each step's pre-activations;
    per step one product adding h_prev @ W_h^T (the GRU a second one for its
    candidate, which sees Γr * h_prev), then the elementwise pass (fn_rnn.h).
Every h (h0 first) is kept in one (T+1, m, n_a) buffer. The whole time loop runs in
C without the GIL and allocates nothing.

The returned h (and the LSTM's c_last) are views into the state, as in the course,
whose caches hold the a<t> they return: writing into them before the backward pass
changes the gradients it computes.

Backward through time keeps every step's pre-activation gradient dz in one
(T, m, gates * n_a) buffer; per step it runs one elementwise pass and one product
for dh_prev (two for the GRU). After the loop, dW_h and dW_x are one A^T B product
over all steps (dW_h = dz^T @ [h0 .. h_{T-1}]), dx one product, db the column sums
of dz.

Threads: calls below _SERIAL_MACS multiply-adds run on one thread throughout (at
that size waking threads costs more than they save, and on a busy machine a
parallel region can wait milliseconds for a thread to be scheduled). Larger ones
whose recurrent weights fit in half a core's level-2 cache split the batch: each
thread runs blocks of rows through every time step, one parallel region per
sequence (fn_batch_blocks in fn_base.h; the time loops are in fn_lstm.h and
fn_rnn.h); otherwise each step's tiles (and the elementwise passes' rows) are split
over the threads. Every value is computed by one thread in a fixed order, so
results do not depend on the thread count.

State and gradient arrays come from fastnn's buffer cache (fastnn/_arena.py), so
the tens of megabytes of a large call are not faulted in afresh every time.
"""
import numpy as np

from .._arena import empty as _empty

from cython cimport floating
from libc.string cimport memcpy, memset

from ._fn_dense cimport column_sums_mt
from ._fn cimport (any_scratch, fn_alloc, fn_free, fn_lstm_steps_d, fn_lstm_steps_f, gemm_any_mt, gemm_nn_mt,
                   gemm_tn2_mt, gru_backward_steps, gru_forward_steps, lstm_backward_steps, lstm_pack,
                   lstm_packed_size, pack, pack_t, packed_size, rnn_backward_steps, rnn_forward_steps)


include "_module.pxi"


# From this many rows on, the fused LSTM step multiplies [h_prev, x_t] by the whole
# of W itself, instead of adding h_prev @ W_h^T to an input projection of all steps
# made up front: the projection's pre-activations would go to memory and come back
# one step at a time, which costs more than the one large product saves; at batch 1
# the projection is the faster (a step reads twice the weights otherwise).
cdef Py_ssize_t _LSTM_X_IN_STEP_ROWS = 12
# packed weights of at most this many bytes share the forward state's block (one
# request to the buffer cache instead of two; lstm_forward)
cdef Py_ssize_t _LSTM_PACKED_WITH_STATE = 1048576
# gate values of more than this many bytes in all go past the caches (no later
# step reads them; the backward pass, much later, finds them in memory either way)
cdef double _LSTM_STREAM_BYTES = 4194304.0

# A step's elementwise pass is split over threads only from this many gate values on.
cdef Py_ssize_t _PARALLEL_ELEMENTS = 65536
# A whole call (forward, or backward) below this many multiply-adds runs on one
# thread. The choice depends on the sizes only, so small calls give the same bits
# at any thread count.
cdef double _SERIAL_MACS = 16777216.0


cdef bint _serial(int T, int m, int gates, int n_a, int n_x) noexcept nogil:
    """Whether a call of this size stays on one thread (the forward and the backward
    of a sequence do about the same multiply-adds, so one rule serves both)."""
    return <double>T * m * gates * n_a * (n_a + n_x) < _SERIAL_MACS


cdef inline int _threads(bint serial) noexcept nogil:
    """Threads for a product of a call."""
    if serial or not fn_openmp():
        return 1
    return _num_threads


cdef int _row_threads(Py_ssize_t m, Py_ssize_t elements, bint serial) noexcept nogil:
    """Threads for an elementwise pass over m rows and `elements` values."""
    if serial or not fn_openmp() or _num_threads <= 1 or m < 2 or elements < _PARALLEL_ELEMENTS:
        return 1
    return _num_threads if m > _num_threads else <int>m


cdef void _pack(const floating* W, int ldw, bint trans_w, int K, int N, floating* packed) noexcept nogil:
    """packed <- op(W) (K, N) in the GEMM core's panels; op(W) = W^T (W is (N, K)) when trans_w."""
    if trans_w:
        pack_t(K, N, W, ldw, packed)
    else:
        pack(K, N, W, ldw, 1, packed)


cdef int _gemm_any(bint serial, bint trans_a, bint trans_b, int M, int N, int K,
                   const floating* A, int lda, const floating* B, int ldb, bint accumulate,
                   floating* C, int ldc) noexcept nogil:
    """C (M, N) = op(A) @ op(B) (+ C when accumulate). Returns 0 when its scratch
    cannot be allocated (nothing done)."""
    cdef floating* buf
    cdef Py_ssize_t r
    if M <= 0 or N <= 0:
        return 1
    if K <= 0:
        if not accumulate:
            for r in range(M):
                memset(C + r * ldc, 0, N * sizeof(floating))
        return 1
    if trans_a and not trans_b:
        # a long reduction (a weight gradient): chunks transposed and packed, no full copy
        return gemm_tn2_mt(M, N, 0, K, A, lda, B, ldb, B, ldb, C, ldc, accumulate, _threads(serial))
    buf = <floating*>fn_alloc(any_scratch(floating is double, M, N, K, trans_a) * sizeof(floating))
    if buf == NULL:
        return 0
    gemm_any_mt(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, buf, _threads(serial))
    fn_free(buf)
    return 1


cdef void _fill_rows(floating* out, const floating* row, Py_ssize_t rows, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(rows):
        memcpy(out + r * n, row, n * sizeof(floating))


cdef void _input_projection(const floating* x, const floating* W, const floating* b,
                            int rows, int n_x, int n_a, int width, floating* z,
                            floating* packed, bint serial) noexcept nogil:
    """z (rows, width) = x (rows, n_x) @ W[:width, n_a:]^T + b[:width]; `packed` is
    room for the packed W_x^T. b enters as the tiles' initial value."""
    if n_x == 0:
        _fill_rows(z, b, rows, width)
        return
    _pack(W + n_a, n_a + n_x, True, n_x, width, packed)
    gemm_nn_mt(rows, width, n_x, x, n_x, packed, b, z, width, False, _threads(serial))


cdef int _weight_gradients(const floating* dz, const floating* h_stack, const floating* x,
                           int rows, int n_x, int n_a, int gates, floating* dW,
                           floating* db, floating* dx, const floating* W, bint serial) noexcept nogil:
    """dW[:, n_a:] = dz^T @ x, db = column sums of dz, dx = dz @ W_x; and when h_stack
    is given, dW[:, :n_a] = dz^T @ h_stack (all gates see the same h_prev): both dW
    blocks in one A^T B product, dz^T formed once. Returns 0 when out of memory."""
    cdef int width = gates * n_a, ld = n_a + n_x
    if h_stack != NULL:
        if not gemm_tn2_mt(width, n_a, n_x, rows, dz, width, h_stack, n_a, x, n_x, dW, ld, False,
                           _threads(serial)):
            return 0
    elif n_x > 0:
        # dW_x only: the candidate of the GRU has its dW_h done by the caller
        if not gemm_tn2_mt(width, n_x, 0, rows, dz, width, x, n_x, x, n_x, dW + n_a, ld, False,
                           _threads(serial)):
            return 0
    column_sums_mt(rows, width, dz, db, _threads(serial))
    return _gemm_any(serial, False, False, rows, n_x, width, dz, width, W + n_a, ld, False, dx, n_x)


def _check(bint ok, str fn):
    if not ok:
        raise MemoryError(f"{fn}: cannot allocate the scratch of a product")


def _dtype_of(a):
    return np.float32 if a.dtype == np.float32 else np.float64


def _packed(x, Py_ssize_t size):
    """Room for `size` elements of packed weights (64-byte aligned, from the buffer cache)."""
    return _empty(max(1, size), dtype=_dtype_of(x))


def _carve(dtype, *shapes):
    """C-contiguous arrays of these shapes cut from one block of fastnn's buffer
    cache (fastnn/_arena.py), which stays mapped from call to call where freshly
    allocated memory would be page-faulted in again each time."""
    return _carve_block(dtype, *shapes)[1]


def _carve_block(dtype, *shapes):
    """(the block, [the arrays]) of _carve: the arrays lie one after the other in it."""
    cdef Py_ssize_t total = 0, start = 0, size
    for shape in shapes:
        total += shape[0] * shape[1] * shape[2]
    block = _empty(total, dtype=dtype)
    arrays = []
    for shape in shapes:
        size = shape[0] * shape[1] * shape[2]
        arrays.append(block[start:start + size].reshape(shape))
        start += size
    return block, arrays


# ---------------------------------------------------------------- RNN

def _rnn_forward(const floating[:, :, ::1] x, const floating[:, ::1] W, const floating[::1] b,
                 floating[:, :, ::1] hs, bint relu, floating[::1] packed, floating[::1] packed_x):
    """hs[0] holds h0 on entry; hs[t + 1] = h<t> on exit."""
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a
    cdef floating* ph = &hs[0, 0, 0]
    cdef const floating* pW = &W[0, 0]
    cdef bint serial = _serial(T, m, 1, n_a, n_x)
    cdef int threads = _row_threads(m, step, serial)
    with nogil:
        _pack(pW, n_a + n_x, True, n_a, n_a, &packed[0])
        _input_projection(&x[0, 0, 0], pW, &b[0], T * m, n_x, n_a, n_a, ph + step, &packed_x[0], serial)
        rnn_forward_steps(T, m, n_a, ph, &packed[0], relu, threads, _threads(serial))


def _rnn_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                  const floating[:, ::1] W, const floating[:, :, ::1] hs, bint relu,
                  floating[:, :, ::1] dz, floating[:, :, ::1] dx, floating[:, ::1] dh0,
                  floating[:, ::1] dW, floating[::1] db, floating[::1] packed):
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a
    cdef const floating* pW = &W[0, 0]
    cdef const floating* pdh = &dh[0, 0, 0]
    cdef const floating* ph = &hs[0, 0, 0]
    cdef floating* pdz = &dz[0, 0, 0]
    cdef floating* acc = &dh0[0, 0]   # dLoss/dh of the current step, ends as dh0
    cdef bint serial = _serial(T, m, 1, n_a, n_x)
    cdef int threads = _row_threads(m, step, serial)
    cdef bint ok
    with nogil:
        _pack(pW, n_a + n_x, False, n_a, n_a, &packed[0])
        rnn_backward_steps(T, m, n_a, ph, pdh, pdz, acc, &packed[0], relu, threads, _threads(serial))
        ok = _weight_gradients(pdz, ph, &x[0, 0, 0], T * m, n_x, n_a, 1, &dW[0, 0], &db[0],
                               &dx[0, 0, 0], pW, serial)
    _check(ok, "rnn_backward")


def rnn_forward(x, h0, W, b, activation):
    T, m, n_x = x.shape
    n_a = h0.shape[1]
    dbl = x.dtype == np.float64
    relu = activation == "relu"
    hs = _empty((T + 1, m, n_a), dtype=_dtype_of(x))
    hs[0] = h0
    _rnn_forward(x, W, b, hs, relu, _packed(x, packed_size(dbl, n_a, n_a)),
                 _packed(x, packed_size(dbl, n_x, n_a)))
    return hs[1:], (x, W, hs, relu)


def rnn_backward(dh, state):
    x, W, hs, relu = state
    n_a = hs.shape[2]
    dz = _empty(hs[1:].shape, dtype=hs.dtype)
    dx = _empty(x.shape, dtype=x.dtype)
    dh0 = _empty(hs.shape[1:], dtype=hs.dtype)
    dW = _empty(W.shape, dtype=W.dtype)
    db = _empty(W.shape[0], dtype=W.dtype)
    _rnn_backward(dh, x, W, hs, relu, dz, dx, dh0, dW, db,
                  _packed(x, packed_size(x.dtype == np.float64, n_a, n_a)))
    return dx, dh0, dW, db


def rnn_cell_forward(x_t, h_prev, W, b, activation):
    h, state = rnn_forward(x_t[np.newaxis], h_prev, W, b, activation)
    return h[0], state


def rnn_cell_backward(dh_next, state):
    dx, dh_prev, dW, db = rnn_backward(dh_next[np.newaxis], state)
    return dx[0], dh_prev, dW, db


# ---------------------------------------------------------------- GRU

def _gru_forward(const floating[:, :, ::1] x, const floating[:, ::1] W, const floating[::1] b,
                 floating[:, :, ::1] g, floating[:, :, ::1] hs, floating[:, :, ::1] rh,
                 floating[::1] packed_gates, floating[::1] packed_candidate, floating[::1] packed_x):
    """hs[0] holds h0 on entry. On exit hs[t + 1] = h<t>, g[t] = [Γu, Γr, c~] and
    rh[t] = Γr * h<t-1> of every step."""
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef int ld = n_a + n_x
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, gstep = 3 * step
    cdef floating* ph = &hs[0, 0, 0]
    cdef floating* pg = &g[0, 0, 0]
    cdef floating* prh = &rh[0, 0, 0]
    cdef const floating* pW = &W[0, 0]
    cdef bint serial = _serial(T, m, 3, n_a, n_x)
    cdef int threads = _row_threads(m, gstep, serial)
    with nogil:
        _pack(pW, ld, True, n_a, 2 * n_a, &packed_gates[0])
        _pack(pW + 2 * n_a * ld, ld, True, n_a, n_a, &packed_candidate[0])
        _input_projection(&x[0, 0, 0], pW, &b[0], T * m, n_x, n_a, 3 * n_a, pg, &packed_x[0], serial)
        gru_forward_steps(T, m, n_a, pg, ph, prh, &packed_gates[0], &packed_candidate[0], threads,
                          _threads(serial))


def _gru_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                  const floating[:, ::1] W, const floating[:, :, ::1] g,
                  const floating[:, :, ::1] hs, const floating[:, :, ::1] rh,
                  floating[:, :, ::1] dz, floating[:, ::1] drh, floating[:, ::1] acc_next,
                  floating[:, :, ::1] dx, floating[:, ::1] dh0, floating[:, ::1] dW, floating[::1] db,
                  floating[::1] packed_gates, floating[::1] packed_candidate):
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef int ld = n_a + n_x
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, gstep = 3 * step
    cdef const floating* pW = &W[0, 0]
    cdef const floating* pdh = &dh[0, 0, 0]
    cdef const floating* ph = &hs[0, 0, 0]
    cdef const floating* pg = &g[0, 0, 0]
    cdef floating* pdz = &dz[0, 0, 0]
    cdef floating* pdrh = &drh[0, 0]
    cdef floating* acc = &dh0[0, 0]        # dLoss/dh<t>
    cdef floating* nxt = &acc_next[0, 0]   # dLoss/dh<t-1>, being accumulated
    cdef floating* pdW = &dW[0, 0]
    cdef bint serial = _serial(T, m, 3, n_a, n_x)
    cdef int threads = _row_threads(m, gstep, serial)
    cdef bint ok
    with nogil:
        _pack(pW, ld, False, 2 * n_a, n_a, &packed_gates[0])
        _pack(pW + 2 * n_a * ld, ld, False, n_a, n_a, &packed_candidate[0])
        gru_backward_steps(T, m, n_a, pg, ph, pdh, pdz, pdrh, nxt, acc, &packed_gates[0], &packed_candidate[0],
                           threads, _threads(serial))
        # dW_h of the update and reset gates sees h_prev, the candidate's sees Γr * h_prev
        ok = _gemm_any(serial, True, False, 2 * n_a, n_a, T * m, pdz, 3 * n_a, ph, n_a, False, pdW, ld)
        ok = ok and _gemm_any(serial, True, False, n_a, n_a, T * m, pdz + 2 * n_a, 3 * n_a, &rh[0, 0, 0], n_a,
                              False, pdW + 2 * n_a * ld, ld)
        ok = ok and _weight_gradients(pdz, NULL, &x[0, 0, 0], T * m, n_x, n_a, 3, pdW, &db[0], &dx[0, 0, 0],
                                      pW, serial)
    _check(ok, "gru_backward")


def gru_forward(x, h0, W, b):
    T, m, n_x = x.shape
    n_a = h0.shape[1]
    dbl = x.dtype == np.float64
    g, hs, rh = _carve(_dtype_of(x), (T, m, 3 * n_a), (T + 1, m, n_a), (T, m, n_a))
    hs[0] = h0
    _gru_forward(x, W, b, g, hs, rh, _packed(x, packed_size(dbl, n_a, 2 * n_a)),
                 _packed(x, packed_size(dbl, n_a, n_a)), _packed(x, packed_size(dbl, n_x, 3 * n_a)))
    return hs[1:], (x, W, g, hs, rh)


def gru_backward(dh, state):
    x, W, g, hs, rh = state
    dtype = hs.dtype
    dbl = dtype == np.float64
    m, n_a = hs.shape[1:]
    dz = _empty(g.shape, dtype=dtype)
    drh = _empty((m, n_a), dtype=dtype)
    acc_next = _empty((m, n_a), dtype=dtype)
    dx = _empty(x.shape, dtype=dtype)
    dh0 = _empty((m, n_a), dtype=dtype)
    dW = _empty(W.shape, dtype=dtype)
    db = _empty(W.shape[0], dtype=dtype)
    _gru_backward(dh, x, W, g, hs, rh, dz, drh, acc_next, dx, dh0, dW, db,
                  _packed(x, packed_size(dbl, 2 * n_a, n_a)), _packed(x, packed_size(dbl, n_a, n_a)))
    return dx, dh0, dW, db


def gru_cell_forward(x_t, h_prev, W, b):
    h, state = gru_forward(x_t[np.newaxis], h_prev, W, b)
    return h[0], state


def gru_cell_backward(dh_next, state):
    dx, dh_prev, dW, db = gru_backward(dh_next[np.newaxis], state)
    return dx[0], dh_prev, dW, db


# ---------------------------------------------------------------- LSTM

cdef void _lstm_steps(int T, int m, int n_x, int n_a, const floating* x, const floating* b, floating* pg,
                      floating* ph, floating* pc, floating* ptc, const floating* pk, bint x_in_step,
                      bint stream, int threads) noexcept nogil:
    """The time loop of the fused step (fn_lstm.h's lstm_steps); pg holds the input
    projection of every step on entry unless x_in_step."""
    if floating is float:
        fn_lstm_steps_f(T, m, n_x, n_a, x, b, pg, ph, pc, ptc, pk, x_in_step, stream, threads)
    else:
        fn_lstm_steps_d(T, m, n_x, n_a, x, b, pg, ph, pc, ptc, pk, x_in_step, stream, threads)


cdef void _lstm_forward(int T, int m, int n_x, int n_a, const floating* x, const floating* W, const floating* b,
                        floating* pg, floating* pk, bint x_in_step) noexcept nogil:
    """The forward pass in the state at pg: g, hs, cs and tanh_c one after the other
    (lstm_forward's block), hs[0], cs[0] holding h0, c0 on entry. On exit
    hs[t + 1], cs[t + 1] = h<t>, c<t>, g[t] = [Γf, Γu, c~, Γo] and
    tanh_c[t] = tanh(c<t>) of every step. pk is room for the packed W^T (or W_h^T)
    and, after it, W_x^T (_lstm_packed_size)."""
    cdef bint dbl = floating is double
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, gstep = 4 * step
    cdef size_t steps_size = lstm_packed_size(dbl, n_a, n_a + n_x if x_in_step else n_a)
    cdef floating* ph = pg + T * gstep
    cdef floating* pc = ph + (T + 1) * step
    cdef floating* ptc = pc + (T + 1) * step
    cdef bint serial = _serial(T, m, 4, n_a, n_x)
    cdef bint stream = x_in_step and <double>T * gstep * sizeof(floating) >= _LSTM_STREAM_BYTES
    lstm_pack(n_a, n_a + n_x if x_in_step else n_a, W, n_a + n_x, pk)
    if not x_in_step:
        _input_projection(x, W, b, T * m, n_x, n_a, 4 * n_a, pg, pk + steps_size, serial)
    _lstm_steps(T, m, n_x, n_a, x, b, pg, ph, pc, ptc, pk, x_in_step, stream, _threads(serial))


cdef size_t _lstm_packed_size(bint dbl, Py_ssize_t n_x, Py_ssize_t n_a, bint x_in_step) noexcept nogil:
    """Elements of the packed weights of _lstm_forward: W^T whole (x in the step), or
    W_h^T and W_x^T."""
    if x_in_step:
        return lstm_packed_size(dbl, n_a, n_a + n_x)
    return lstm_packed_size(dbl, n_a, n_a) + packed_size(dbl, n_x, 4 * n_a)


def _lstm_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                   const floating[:, ::1] W, const floating[:, :, ::1] g,
                   const floating[:, :, ::1] hs, const floating[:, :, ::1] cs,
                   const floating[:, :, ::1] tanh_c, floating[:, :, ::1] dz,
                   floating[:, :, ::1] dx, floating[:, ::1] dh0, floating[:, ::1] dc,
                   floating[:, ::1] dW, floating[::1] db, floating[::1] packed):
    """dc holds dLoss/dc<T> on entry and dc0 on exit."""
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, gstep = 4 * step
    cdef const floating* pW = &W[0, 0]
    cdef const floating* pdh = &dh[0, 0, 0]
    cdef const floating* pg = &g[0, 0, 0]
    cdef const floating* pc = &cs[0, 0, 0]
    cdef const floating* ptc = &tanh_c[0, 0, 0]
    cdef floating* pdz = &dz[0, 0, 0]
    cdef floating* pdc = &dc[0, 0]
    cdef floating* acc = &dh0[0, 0]   # dLoss/dh of the current step, ends as dh0
    cdef bint serial = _serial(T, m, 4, n_a, n_x)
    cdef int threads = _row_threads(m, gstep, serial)
    cdef bint ok
    with nogil:
        _pack(pW, n_a + n_x, False, 4 * n_a, n_a, &packed[0])
        lstm_backward_steps(T, m, n_a, pg, pc, ptc, pdh, pdc, pdz, acc, &packed[0], threads, _threads(serial))
        ok = _weight_gradients(pdz, &hs[0, 0, 0], &x[0, 0, 0], T * m, n_x, n_a, 4, &dW[0, 0], &db[0],
                               &dx[0, 0, 0], pW, serial)
    _check(ok, "lstm_backward")


def lstm_forward(x, h0, c0, W, b):
    # At batch 1 a whole sequence takes about 100 microseconds, and each Python-level
    # step here is a noticeable part of it: so the kernel gets the arrays' data
    # directly, and packed weights of up to _LSTM_PACKED_WITH_STATE bytes come in the
    # same block of the buffer cache as the state, after it (they then live as long
    # as the forward cache: 128 KiB next to 176 KiB of state on the benchmark's L2);
    # larger ones get a block of their own, free again after the call.
    cdef Py_ssize_t T = x.shape[0], m = x.shape[1], n_x = x.shape[2], n_a = h0.shape[1]
    cdef Py_ssize_t step = m * n_a, gsize = T * 4 * step, hsize = (T + 1) * step
    cdef bint single = x.dtype == np.float32
    cdef bint x_in_step = m >= _LSTM_X_IN_STEP_ROWS
    cdef Py_ssize_t state = gsize + 2 * hsize + T * step
    # the packed weights start on a cache line (the buffer cache's block does)
    cdef Py_ssize_t start = (state + 15) // 16 * 16
    cdef void* xp
    cdef void* wp
    cdef void* bp
    cdef char* pg
    cdef Py_ssize_t size = 4 if single else 8
    cdef Py_ssize_t psize = _lstm_packed_size(not single, n_x, n_a, x_in_step)
    cdef bint with_state = psize * size <= _LSTM_PACKED_WITH_STATE
    cdef char* pk
    block = _empty(start + psize if with_state else state, dtype=x.dtype)
    packed = None if with_state else _empty(max(1, psize), dtype=x.dtype)
    g = block[:gsize].reshape(T, m, 4 * n_a)
    hs = block[gsize:gsize + hsize].reshape(T + 1, m, n_a)
    cs = block[gsize + hsize:gsize + 2 * hsize].reshape(T + 1, m, n_a)
    tanh_c = block[gsize + 2 * hsize:state].reshape(T, m, n_a)
    xp, wp, bp, pg = _data(x), _data(W), _data(b), <char*>_data(block)
    pk = pg + start * size if with_state else <char*>_data(packed)
    memcpy(pg + gsize * size, _data(h0), step * size)
    memcpy(pg + (gsize + hsize) * size, _data(c0), step * size)
    with nogil:
        if single:
            _lstm_forward(T, m, n_x, n_a, <const float*>xp, <const float*>wp, <const float*>bp, <float*>pg,
                          <float*>pk, x_in_step)
        else:
            _lstm_forward(T, m, n_x, n_a, <const double*>xp, <const double*>wp, <const double*>bp, <double*>pg,
                          <double*>pk, x_in_step)
    return hs[1:], cs[T], (x, W, g, hs, cs, tanh_c)


def lstm_backward(dh, dc_last, state):
    x, W, g, hs, cs, tanh_c = state
    dtype = hs.dtype
    m, n_a = hs.shape[1:]
    dz = _empty(g.shape, dtype=dtype)
    dx = _empty(x.shape, dtype=dtype)
    dh0 = _empty((m, n_a), dtype=dtype)
    dc0 = np.array(dc_last, dtype=dtype, order="C", copy=True)
    dW = _empty(W.shape, dtype=dtype)
    db = _empty(W.shape[0], dtype=dtype)
    _lstm_backward(dh, x, W, g, hs, cs, tanh_c, dz, dx, dh0, dc0, dW, db,
                   _packed(x, packed_size(dtype == np.float64, 4 * n_a, n_a)))
    return dx, dh0, dc0, dW, db


def lstm_cell_forward(x_t, h_prev, c_prev, W, b):
    h, c, state = lstm_forward(x_t[np.newaxis], h_prev, c_prev, W, b)
    return h[0], c, state


def lstm_cell_backward(dh_next, dc_next, state):
    dx, dh_prev, dc_prev, dW, db = lstm_backward(dh_next[np.newaxis], dc_next, state)
    return dx[0], dh_prev, dc_prev, dW, db
