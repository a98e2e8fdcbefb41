"""Optimizer steps of the cython backend (normalised arguments; docs/KERNELS.md).

The kernels are C (fn_optim.h), written once over the vector type of each CPU tier
and element type. A call hands every array of one dtype to the C kernel at once, as
tables of pointers and sizes; the kernel cuts each array into fixed chunks, the
chunks of all the arrays are the tasks of the OpenMP threads, and each chunk is one
pass that does the whole update of its elements (weight decay, moments, bias
correction, parameter) in place. Each element's update uses that element alone, so
the results do not depend on the thread count.

Here the hyperparameters become the kernel's coefficients, in double: c = 1 - beta,
and for Adam's step t the bias corrections folded into the step,
step = lr / (1 - beta1^t) and rbc2 = 1 / sqrt(1 - beta2^t).
"""
import numpy as np
cimport numpy as cnp
from libc.stdlib cimport free, malloc

from ._fn_optim cimport (fn_adam_step_d, fn_adam_step_f, fn_optim_arrays, fn_optim_hyper, fn_rmsprop_step_d,
                         fn_rmsprop_step_f, fn_sgd_step_d, fn_sgd_step_f)

include "_module.pxi"

cdef enum:
    _SGD = 0
    _RMSPROP = 1
    _ADAM = 2


cdef int _run(int kind, params, grads, v, s, fn_optim_hyper* h) except -1:
    """Fill the pointer tables and run the kernel of `kind` on the dtype of params[0]."""
    cdef Py_ssize_t n = len(params), i
    cdef fn_optim_arrays a
    cdef bint single
    cdef int status = 0, threads = _num_threads
    if n == 0:
        return 0
    single = params[0].dtype == np.float32
    cdef void** table = <void**>malloc(4 * n * sizeof(void*))
    cdef Py_ssize_t* size = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
    if table == NULL or size == NULL:
        free(table)
        free(size)
        raise MemoryError("optimizer step: cannot allocate the array tables")
    try:
        for i in range(n):
            table[i] = _data(params[i])
            table[n + i] = _data(grads[i])
            table[2 * n + i] = _data(v[i]) if v is not None else NULL
            table[3 * n + i] = _data(s[i]) if s is not None else NULL
            size[i] = cnp.PyArray_SIZE(<cnp.ndarray>params[i])
        a.count = n
        a.w = table
        a.g = <const void**>(table + n)
        a.v = table + 2 * n if v is not None else NULL
        a.s = table + 3 * n if s is not None else NULL
        a.size = size
        with nogil:
            if kind == _SGD:
                status = fn_sgd_step_f(&a, h, threads) if single else fn_sgd_step_d(&a, h, threads)
            elif kind == _RMSPROP:
                status = fn_rmsprop_step_f(&a, h, threads) if single else fn_rmsprop_step_d(&a, h, threads)
            else:
                status = fn_adam_step_f(&a, h, threads) if single else fn_adam_step_d(&a, h, threads)
    finally:
        free(table)
        free(size)
    if status != 0:
        raise MemoryError("optimizer step: cannot allocate the task table")
    return 0


cdef fn_optim_hyper _hyper(double lr, double b1, double b2, double eps, double weight_decay):
    cdef fn_optim_hyper h
    h.lr = lr
    h.b1 = b1
    h.c1 = 1.0 - b1
    h.b2 = b2
    h.c2 = 1.0 - b2
    h.eps = eps
    h.weight_decay = weight_decay
    h.step = lr
    h.rbc2 = 1.0
    h.nesterov = 0
    return h


def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """w -= lr * g, or with momentum v = m v + (1 - m) g and w -= lr * v (Nesterov:
    w -= lr * (m v + (1 - m) g)); velocity is None without momentum."""
    cdef fn_optim_hyper h = _hyper(lr, momentum, 0.0, 0.0, weight_decay)
    h.nesterov = bool(nesterov)
    _run(_SGD, params, grads, velocity, None, &h)


def rmsprop_step(params, grads, square_avg, lr, beta, eps, weight_decay):
    """s = beta s + (1 - beta) g^2; w -= lr * g / (sqrt(s) + eps)."""
    cdef fn_optim_hyper h = _hyper(lr, 0.0, beta, eps, weight_decay)
    _run(_RMSPROP, params, grads, None, square_avg, &h)


def adam_step(params, grads, v, s, t, lr, beta1, beta2, eps, weight_decay):
    """Adam's step number t (>= 1): the moments, then w -= lr * v^ / (sqrt(s^) + eps)."""
    cdef fn_optim_hyper h = _hyper(lr, beta1, beta2, eps, weight_decay)
    h.step = lr / (1.0 - beta1 ** t)
    h.rbc2 = 1.0 / (1.0 - beta2 ** t) ** 0.5
    _run(_ADAM, params, grads, v, s, &h)
