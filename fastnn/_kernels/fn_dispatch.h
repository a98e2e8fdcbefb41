/* The entry points of the C kernels for one element type: each runs the instance of
 * the active tier (fn_kernels.h includes this file for float and for double, with
 * FN_T, FN_TS and FN_LSTM_IO defined; no include guard). The functions are
 * documented where they are defined (fn_gemm.h, fn_lstm.h, fn_rnn.h). */

FN_UNUSED static size_t FN_D(packed_size, FN_TS)(ptrdiff_t K, ptrdiff_t N)
{
    FN_PICK(return, packed_size, FN_TS, (K, N))
    return 0;
}

FN_UNUSED static void FN_D(pack, FN_TS)(ptrdiff_t K, ptrdiff_t N, const FN_T *src, ptrdiff_t sk, ptrdiff_t sn,
                                        FN_T *P)
{
    FN_PICK(, pack, FN_TS, (K, N, src, sk, sn, P))
}

FN_UNUSED static void FN_D(pack_t, FN_TS)(ptrdiff_t K, ptrdiff_t N, const FN_T *S, ptrdiff_t ls, FN_T *P)
{
    FN_PICK(, pack_t, FN_TS, (K, N, S, ls, P))
}

FN_UNUSED static void FN_D(gemm_nn_mt, FN_TS)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *A,
                                              ptrdiff_t lda, const FN_T *P, const FN_T *bias, FN_T *C,
                                              ptrdiff_t ldc, int accumulate, int threads)
{
    FN_PICK(, gemm_nn_mt, FN_TS, (M, N, K, A, lda, P, bias, C, ldc, accumulate, threads))
}

FN_UNUSED static int FN_D(gemm_tn2_mt, FN_TS)(ptrdiff_t M, ptrdiff_t N1, ptrdiff_t N2, ptrdiff_t R,
                                              const FN_T *A, ptrdiff_t lda, const FN_T *B1, ptrdiff_t ldb1,
                                              const FN_T *B2, ptrdiff_t ldb2, FN_T *C, ptrdiff_t ldc,
                                              int accumulate, int threads)
{
    FN_PICK(return, gemm_tn2_mt, FN_TS, (M, N1, N2, R, A, lda, B1, ldb1, B2, ldb2, C, ldc, accumulate, threads))
    return 0;
}

FN_UNUSED static int FN_D(gemm_tn_mt, FN_TS)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t R, const FN_T *A, ptrdiff_t lda,
                                             const FN_T *B, ptrdiff_t ldb, FN_T *C, ptrdiff_t ldc, int accumulate,
                                             int threads)
{
    FN_PICK(return, gemm_tn_mt, FN_TS, (M, N, R, A, lda, B, ldb, C, ldc, accumulate, threads))
    return 0;
}

FN_UNUSED static size_t FN_D(any_scratch, FN_TS)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int trans_a)
{
    FN_PICK(return, any_scratch, FN_TS, (M, N, K, trans_a))
    return 0;
}

FN_UNUSED static void FN_D(gemm_any_mt, FN_TS)(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                               const FN_T *A, ptrdiff_t lda, const FN_T *B, ptrdiff_t ldb,
                                               int accumulate, FN_T *C, ptrdiff_t ldc, FN_T *scratch, int threads)
{
    FN_PICK(, gemm_any_mt, FN_TS, (trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, scratch, threads))
}

FN_UNUSED static void FN_D(gemm_list, FN_TS)(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                             const FN_T *const *A, ptrdiff_t lda, const FN_T *const *B,
                                             ptrdiff_t ldb, FN_T *const *C, ptrdiff_t ldc,
                                             const unsigned char *accumulate, ptrdiff_t count, FN_T *scratch)
{
    FN_PICK(, gemm_list, FN_TS, (trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, count, scratch))
}

FN_UNUSED static void FN_D(transpose_matrix, FN_TS)(ptrdiff_t rows, ptrdiff_t cols, const FN_T *A, ptrdiff_t lda,
                                                    FN_T *At, ptrdiff_t ldt)
{
    FN_PICK(, transpose_matrix, FN_TS, (rows, cols, A, lda, At, ldt))
}

FN_UNUSED static size_t FN_D(conv_scratch, FN_TS)(const fn_conv_geom *g)
{
    FN_PICK(return, conv_scratch, FN_TS, (g))
    return 0;
}

FN_UNUSED static void FN_D(conv_forward, FN_TS)(const fn_conv_geom *g, const FN_T *x, ptrdiff_t c0, const FN_T *P,
                                                ptrdiff_t Cog, const FN_T *bias, FN_T *y, ptrdiff_t ldy,
                                                ptrdiff_t m0, ptrdiff_t m1, const FN_T *zeros, void **scratch)
{
    FN_PICK(, conv_forward, FN_TS, (g, x, c0, P, Cog, bias, y, ldy, m0, m1, zeros, scratch))
}

FN_UNUSED static void FN_D(conv1_rows, FN_TS)(const fn_conv_geom *g, const FN_T *xp, ptrdiff_t Hp, ptrdiff_t Wp,
                                              const FN_T *wp, ptrdiff_t Cp, ptrdiff_t Cout, const FN_T *bias,
                                              FN_T *y, ptrdiff_t q0, ptrdiff_t q1)
{
    FN_PICK(, conv1_rows, FN_TS, (g, xp, Hp, Wp, wp, Cp, Cout, bias, y, q0, q1))
}

FN_UNUSED static void FN_D(conv1_dw_rows, FN_TS)(const fn_conv_geom *g, const FN_T *xp, ptrdiff_t Hp, ptrdiff_t Wp,
                                                 const FN_T *dy, ptrdiff_t Cout, ptrdiff_t Cp, FN_T *part,
                                                 ptrdiff_t q0, ptrdiff_t q1, FN_T *scratch)
{
    FN_PICK(, conv1_dw_rows, FN_TS, (g, xp, Hp, Wp, dy, Cout, Cp, part, q0, q1, scratch))
}

FN_UNUSED static size_t FN_D(conv_dw_scratch, FN_TS)(ptrdiff_t rows)
{
    FN_PICK(return, conv_dw_scratch, FN_TS, (rows))
    return 0;
}

FN_UNUSED static void FN_D(conv_weight_grad, FN_TS)(const fn_conv_geom *g, const FN_T *x, ptrdiff_t c0,
                                                    const FN_T *dy, ptrdiff_t ldy, ptrdiff_t co0, ptrdiff_t Cog,
                                                    FN_T *dw, ptrdiff_t ldw, ptrdiff_t q0, ptrdiff_t q1,
                                                    void **scratch)
{
    FN_PICK(, conv_weight_grad, FN_TS, (g, x, c0, dy, ldy, co0, Cog, dw, ldw, q0, q1, scratch))
}

FN_UNUSED static size_t FN_D(lstm_packed_size, FN_TS)(ptrdiff_t n_a, ptrdiff_t K)
{
    FN_PICK(return, lstm_packed_size, FN_TS, (n_a, K))
    return 0;
}

FN_UNUSED static void FN_D(lstm_pack, FN_TS)(ptrdiff_t n_a, ptrdiff_t K, const FN_T *W, ptrdiff_t ldw, FN_T *P)
{
    FN_PICK(, lstm_pack, FN_TS, (n_a, K, W, ldw, P))
}

FN_UNUSED static void FN_D(lstm_step_mt, FN_TS)(ptrdiff_t m, const FN_LSTM_IO *io, const FN_T *P, int threads)
{
    FN_PICK(, lstm_step_mt, FN_TS, (m, io, P, threads))
}

FN_UNUSED static void FN_D(lstm_steps, FN_TS)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_x, ptrdiff_t n_a, const FN_T *x,
                                              const FN_T *b, FN_T *g, FN_T *h, FN_T *c, FN_T *tanh_c,
                                              const FN_T *P, int x_in_step, int stream, int threads)
{
    FN_PICK(, lstm_steps, FN_TS, (T, m, n_x, n_a, x, b, g, h, c, tanh_c, P, x_in_step, stream, threads))
}

FN_UNUSED static void FN_D(rnn_forward_rows, FN_TS)(ptrdiff_t rows, ptrdiff_t n, FN_T *h, int relu, int threads)
{
    FN_PICK(, rnn_forward_rows, FN_TS, (rows, n, h, relu, threads))
}

FN_UNUSED static void FN_D(rnn_backward_rows, FN_TS)(ptrdiff_t rows, ptrdiff_t n, const FN_T *h, const FN_T *dh,
                                                     FN_T *dz, int relu, int threads)
{
    FN_PICK(, rnn_backward_rows, FN_TS, (rows, n, h, dh, dz, relu, threads))
}

FN_UNUSED static void FN_D(lstm_backward_rows, FN_TS)(ptrdiff_t rows, ptrdiff_t n, const FN_T *g,
                                                      const FN_T *c_prev, const FN_T *tanh_c, const FN_T *dh,
                                                      FN_T *dc, FN_T *dz, int threads)
{
    FN_PICK(, lstm_backward_rows, FN_TS, (rows, n, g, c_prev, tanh_c, dh, dc, dz, threads))
}

FN_UNUSED static void FN_D(lstm_backward_steps, FN_TS)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, const FN_T *g,
                                                       const FN_T *c, const FN_T *tanh_c, const FN_T *dh, FN_T *dc,
                                                       FN_T *dz, FN_T *dh_prev, const FN_T *P, int row_threads,
                                                       int threads)
{
    FN_PICK(, lstm_backward_steps, FN_TS, (T, m, n_a, g, c, tanh_c, dh, dc, dz, dh_prev, P, row_threads, threads))
}

FN_UNUSED static void FN_D(rnn_forward_steps, FN_TS)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, FN_T *h, const FN_T *P,
                                                     int relu, int row_threads, int threads)
{
    FN_PICK(, rnn_forward_steps, FN_TS, (T, m, n_a, h, P, relu, row_threads, threads))
}

FN_UNUSED static void FN_D(rnn_backward_steps, FN_TS)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, const FN_T *h,
                                                      const FN_T *dh, FN_T *dz, FN_T *dh_prev, const FN_T *P,
                                                      int relu, int row_threads, int threads)
{
    FN_PICK(, rnn_backward_steps, FN_TS, (T, m, n_a, h, dh, dz, dh_prev, P, relu, row_threads, threads))
}

FN_UNUSED static void FN_D(gru_forward_steps, FN_TS)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, FN_T *g, FN_T *h,
                                                     FN_T *rh, const FN_T *Pg, const FN_T *Pc, int row_threads,
                                                     int threads)
{
    FN_PICK(, gru_forward_steps, FN_TS, (T, m, n_a, g, h, rh, Pg, Pc, row_threads, threads))
}

FN_UNUSED static void FN_D(gru_backward_steps, FN_TS)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, const FN_T *g,
                                                      const FN_T *h, const FN_T *dh, FN_T *dz, FN_T *drh,
                                                      FN_T *nxt, FN_T *dh_prev, const FN_T *Pg, const FN_T *Pc,
                                                      int row_threads, int threads)
{
    FN_PICK(, gru_backward_steps, FN_TS, (T, m, n_a, g, h, dh, dz, drh, nxt, dh_prev, Pg, Pc, row_threads, threads))
}

FN_UNUSED static void FN_D(gru_gates_rows, FN_TS)(ptrdiff_t rows, ptrdiff_t n, FN_T *g, const FN_T *h_prev,
                                                  FN_T *rh, int threads)
{
    FN_PICK(, gru_gates_rows, FN_TS, (rows, n, g, h_prev, rh, threads))
}

FN_UNUSED static void FN_D(gru_output_rows, FN_TS)(ptrdiff_t rows, ptrdiff_t n, FN_T *g, const FN_T *h_prev,
                                                   FN_T *h_next, int threads)
{
    FN_PICK(, gru_output_rows, FN_TS, (rows, n, g, h_prev, h_next, threads))
}

FN_UNUSED static void FN_D(gru_backward_out_rows, FN_TS)(ptrdiff_t rows, ptrdiff_t n, const FN_T *g,
                                                         const FN_T *h_prev, const FN_T *dh, FN_T *dh_prev,
                                                         FN_T *dz, int threads)
{
    FN_PICK(, gru_backward_out_rows, FN_TS, (rows, n, g, h_prev, dh, dh_prev, dz, threads))
}

FN_UNUSED static void FN_D(gru_backward_reset_rows, FN_TS)(ptrdiff_t rows, ptrdiff_t n, const FN_T *g,
                                                           const FN_T *h_prev, const FN_T *drh, FN_T *dh_prev,
                                                           FN_T *dz, int threads)
{
    FN_PICK(, gru_backward_reset_rows, FN_TS, (rows, n, g, h_prev, drh, dh_prev, dz, threads))
}

FN_UNUSED static void FN_D(activate, FN_TS)(int kind, ptrdiff_t n, const FN_T *x, FN_T *y, int threads)
{
    FN_PICK(, activate, FN_TS, (kind, n, x, y, threads))
}
