/* The optimizer kernels' entry points for one element type (fn_kernels.h includes
 * this file for float and double; no include guard): each runs the instance of the
 * active tier. The kernels are documented in fn_optim.h; each returns 0, or -1 when
 * its task table could not be allocated (then nothing was updated). */

FN_UNUSED static int FN_D(sgd_step, FN_TS)(const fn_optim_arrays *a, const fn_optim_hyper *h, int threads)
{
    FN_PICK(return, sgd_step, FN_TS, (a, h, threads))
    return -1;
}

FN_UNUSED static int FN_D(rmsprop_step, FN_TS)(const fn_optim_arrays *a, const fn_optim_hyper *h, int threads)
{
    FN_PICK(return, rmsprop_step, FN_TS, (a, h, threads))
    return -1;
}

FN_UNUSED static int FN_D(adam_step, FN_TS)(const fn_optim_arrays *a, const fn_optim_hyper *h, int threads)
{
    FN_PICK(return, adam_step, FN_TS, (a, h, threads))
    return -1;
}
