/* Pooling kernels, instantiated per CPU tier and element type by fn_kernels.h (no
 * include guard). */
