/* The pooling kernels' entry points for one element type (fn_kernels.h includes
 * this file for float and double; no include guard). */
