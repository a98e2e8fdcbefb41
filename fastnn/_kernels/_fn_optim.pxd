# The optimizer kernels of fn_optim.h as the Cython driver (cy_optim.pyx) calls them:
# fn_<name>_f / fn_<name>_d run the instance of the active CPU tier. They are
# documented in fn_optim.h.

cdef extern from "fn_kernels.h":
    ctypedef struct fn_optim_arrays:
        Py_ssize_t count
        void** w
        const void** g
        void** v
        void** s
        const Py_ssize_t* size

    ctypedef struct fn_optim_hyper:
        double lr, b1, c1, b2, c2, eps, weight_decay, step, rbc2
        int nesterov

    int fn_sgd_step_f(const fn_optim_arrays* a, const fn_optim_hyper* h, int threads) noexcept nogil
    int fn_sgd_step_d(const fn_optim_arrays* a, const fn_optim_hyper* h, int threads) noexcept nogil
    int fn_rmsprop_step_f(const fn_optim_arrays* a, const fn_optim_hyper* h, int threads) noexcept nogil
    int fn_rmsprop_step_d(const fn_optim_arrays* a, const fn_optim_hyper* h, int threads) noexcept nogil
    int fn_adam_step_f(const fn_optim_arrays* a, const fn_optim_hyper* h, int threads) noexcept nogil
    int fn_adam_step_d(const fn_optim_arrays* a, const fn_optim_hyper* h, int threads) noexcept nogil
