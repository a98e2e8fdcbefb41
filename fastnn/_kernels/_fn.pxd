# fastnn's C kernels (fn_kernels.h) as the Cython drivers call them: each wrapper
# takes either element type (fused `floating`) and runs the instance of the active
# CPU tier. The C functions are documented where they are defined (fn_gemm.h,
# fn_lstm.h, fn_rnn.h, fn_math.h); every module that cimports this one carries its
# own copy of the tier setting (fn_base.h), set through set_tier below.
from cython cimport floating

cdef extern from "fn_kernels.h":
    int FN_ACT_SIGMOID
    int FN_ACT_TANH
    int FN_ACT_RELU

    int fn_cpu_tier() noexcept nogil
    int fn_set_tier(int tier) noexcept nogil
    int fn_tier() noexcept nogil
    int fn_openmp() noexcept nogil
    int fn_max_threads() noexcept nogil
    int fn_tile_rows() noexcept nogil
    int fn_panel_width(int is_double) noexcept nogil
    ctypedef struct fn_region:
        double wall, cpu, busy
    int fn_region_threads(int threads) noexcept nogil
    void fn_region_begin(fn_region* r) noexcept nogil
    void fn_region_end(const fn_region* r) noexcept nogil
    double fn_main_clock() noexcept nogil
    void fn_add_busy(double* busy, double t0) noexcept nogil
    int fn_backing_off() noexcept nogil
    void* fn_alloc(size_t nbytes) noexcept nogil
    void fn_free(void* p) noexcept nogil

    ctypedef struct fn_conv_geom:
        Py_ssize_t N, H, W, C, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, Cg

    ctypedef struct fn_lstm_io_f:
        Py_ssize_t n_a, n_x
        const float* h_prev
        const float* c_prev
        const float* x
        const float* bias
        const float* gx
        const float* gx_next
        float* g
        float* c_next
        float* tanh_c
        float* h_next
        int stream
    ctypedef struct fn_lstm_io_d:
        Py_ssize_t n_a, n_x
        const double* h_prev
        const double* c_prev
        const double* x
        const double* bias
        const double* gx
        const double* gx_next
        double* g
        double* c_next
        double* tanh_c
        double* h_next
        int stream

    size_t fn_packed_size_f(Py_ssize_t K, Py_ssize_t N) noexcept nogil
    size_t fn_packed_size_d(Py_ssize_t K, Py_ssize_t N) noexcept nogil
    void fn_pack_f(Py_ssize_t K, Py_ssize_t N, const float* src, Py_ssize_t sk, Py_ssize_t sn,
                   float* P) noexcept nogil
    void fn_pack_d(Py_ssize_t K, Py_ssize_t N, const double* src, Py_ssize_t sk, Py_ssize_t sn,
                   double* P) noexcept nogil
    void fn_pack_t_f(Py_ssize_t K, Py_ssize_t N, const float* S, Py_ssize_t ls, float* P) noexcept nogil
    void fn_pack_t_d(Py_ssize_t K, Py_ssize_t N, const double* S, Py_ssize_t ls, double* P) noexcept nogil
    void fn_transpose_matrix_f(Py_ssize_t rows, Py_ssize_t cols, const float* A, Py_ssize_t lda, float* At,
                               Py_ssize_t ldt) noexcept nogil
    void fn_transpose_matrix_d(Py_ssize_t rows, Py_ssize_t cols, const double* A, Py_ssize_t lda, double* At,
                               Py_ssize_t ldt) noexcept nogil
    void fn_gemm_nn_mt_f(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A, Py_ssize_t lda,
                         const float* P, const float* bias, float* C, Py_ssize_t ldc, int accumulate,
                         int threads) noexcept nogil
    void fn_gemm_nn_mt_d(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A, Py_ssize_t lda,
                         const double* P, const double* bias, double* C, Py_ssize_t ldc, int accumulate,
                         int threads) noexcept nogil
    int fn_gemm_tn2_mt_f(Py_ssize_t M, Py_ssize_t N1, Py_ssize_t N2, Py_ssize_t R, const float* A,
                         Py_ssize_t lda, const float* B1, Py_ssize_t ldb1, const float* B2, Py_ssize_t ldb2,
                         float* C, Py_ssize_t ldc, int accumulate, int threads) noexcept nogil
    int fn_gemm_tn2_mt_d(Py_ssize_t M, Py_ssize_t N1, Py_ssize_t N2, Py_ssize_t R, const double* A,
                         Py_ssize_t lda, const double* B1, Py_ssize_t ldb1, const double* B2, Py_ssize_t ldb2,
                         double* C, Py_ssize_t ldc, int accumulate, int threads) noexcept nogil
    size_t fn_any_scratch_f(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int trans_a) noexcept nogil
    size_t fn_any_scratch_d(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int trans_a) noexcept nogil
    void fn_gemm_any_mt_f(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                          Py_ssize_t lda, const float* B, Py_ssize_t ldb, int accumulate, float* C,
                          Py_ssize_t ldc, float* scratch, int threads) noexcept nogil
    void fn_gemm_any_mt_d(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                          Py_ssize_t lda, const double* B, Py_ssize_t ldb, int accumulate, double* C,
                          Py_ssize_t ldc, double* scratch, int threads) noexcept nogil
    void fn_gemm_list_f(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* const* A,
                        Py_ssize_t lda, const float* const* B, Py_ssize_t ldb, float* const* C, Py_ssize_t ldc,
                        const unsigned char* accumulate, Py_ssize_t count, float* scratch) noexcept nogil
    void fn_gemm_list_d(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* const* A,
                        Py_ssize_t lda, const double* const* B, Py_ssize_t ldb, double* const* C, Py_ssize_t ldc,
                        const unsigned char* accumulate, Py_ssize_t count, double* scratch) noexcept nogil
    size_t fn_conv_scratch_f(const fn_conv_geom* g) noexcept nogil
    size_t fn_conv_scratch_d(const fn_conv_geom* g) noexcept nogil
    void fn_conv1_rows_f(const fn_conv_geom* g, const float* xp, Py_ssize_t Hp, Py_ssize_t Wp, const float* wp,
                         Py_ssize_t Cp, Py_ssize_t Cout, const float* bias, float* y, Py_ssize_t q0,
                         Py_ssize_t q1) noexcept nogil
    void fn_conv1_rows_d(const fn_conv_geom* g, const double* xp, Py_ssize_t Hp, Py_ssize_t Wp, const double* wp,
                         Py_ssize_t Cp, Py_ssize_t Cout, const double* bias, double* y, Py_ssize_t q0,
                         Py_ssize_t q1) noexcept nogil
    void fn_conv1_dw_rows_f(const fn_conv_geom* g, const float* xp, Py_ssize_t Hp, Py_ssize_t Wp, const float* dy,
                            Py_ssize_t Cout, Py_ssize_t Cp, float* part, Py_ssize_t q0, Py_ssize_t q1,
                            float* scratch) noexcept nogil
    void fn_conv1_dw_rows_d(const fn_conv_geom* g, const double* xp, Py_ssize_t Hp, Py_ssize_t Wp,
                            const double* dy, Py_ssize_t Cout, Py_ssize_t Cp, double* part, Py_ssize_t q0,
                            Py_ssize_t q1, double* scratch) noexcept nogil
    void fn_conv_forward_f(const fn_conv_geom* g, const float* x, Py_ssize_t c0, const float* P, Py_ssize_t Cog,
                           const float* bias, float* y, Py_ssize_t ldy, Py_ssize_t m0, Py_ssize_t m1,
                           const float* zeros, void** scratch) noexcept nogil
    void fn_conv_forward_d(const fn_conv_geom* g, const double* x, Py_ssize_t c0, const double* P,
                           Py_ssize_t Cog, const double* bias, double* y, Py_ssize_t ldy, Py_ssize_t m0,
                           Py_ssize_t m1, const double* zeros, void** scratch) noexcept nogil
    size_t fn_conv_dw_scratch_f(Py_ssize_t rows) noexcept nogil
    size_t fn_conv_dw_scratch_d(Py_ssize_t rows) noexcept nogil
    void fn_conv_weight_grad_f(const fn_conv_geom* g, const float* x, Py_ssize_t c0, const float* dy,
                               Py_ssize_t ldy, Py_ssize_t co0, Py_ssize_t Cog, float* dw, Py_ssize_t ldw,
                               Py_ssize_t q0, Py_ssize_t q1, void** scratch) noexcept nogil
    void fn_conv_weight_grad_d(const fn_conv_geom* g, const double* x, Py_ssize_t c0, const double* dy,
                               Py_ssize_t ldy, Py_ssize_t co0, Py_ssize_t Cog, double* dw, Py_ssize_t ldw,
                               Py_ssize_t q0, Py_ssize_t q1, void** scratch) noexcept nogil
    size_t fn_lstm_packed_size_f(Py_ssize_t n_a, Py_ssize_t K) noexcept nogil
    size_t fn_lstm_packed_size_d(Py_ssize_t n_a, Py_ssize_t K) noexcept nogil
    void fn_lstm_pack_f(Py_ssize_t n_a, Py_ssize_t K, const float* W, Py_ssize_t ldw, float* P) noexcept nogil
    void fn_lstm_pack_d(Py_ssize_t n_a, Py_ssize_t K, const double* W, Py_ssize_t ldw, double* P) noexcept nogil
    void fn_lstm_step_mt_f(Py_ssize_t m, const fn_lstm_io_f* io, const float* P, int threads) noexcept nogil
    void fn_lstm_step_mt_d(Py_ssize_t m, const fn_lstm_io_d* io, const double* P, int threads) noexcept nogil
    void fn_lstm_steps_f(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_x, Py_ssize_t n_a, const float* x,
                         const float* b, float* g, float* h, float* c, float* tanh_c, const float* P,
                         int x_in_step, int stream, int threads) noexcept nogil
    void fn_lstm_steps_d(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_x, Py_ssize_t n_a, const double* x,
                         const double* b, double* g, double* h, double* c, double* tanh_c, const double* P,
                         int x_in_step, int stream, int threads) noexcept nogil
    void fn_lstm_backward_steps_f(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const float* g, const float* c,
                                  const float* tanh_c, const float* dh, float* dc, float* dz, float* dh_prev,
                                  const float* P, int row_threads, int threads) noexcept nogil
    void fn_lstm_backward_steps_d(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const double* g, const double* c,
                                  const double* tanh_c, const double* dh, double* dc, double* dz, double* dh_prev,
                                  const double* P, int row_threads, int threads) noexcept nogil
    void fn_rnn_forward_steps_f(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, float* h, const float* P, int relu,
                                int row_threads, int threads) noexcept nogil
    void fn_rnn_backward_steps_f(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const float* h, const float* dh,
                                 float* dz, float* dh_prev, const float* P, int relu, int row_threads,
                                 int threads) noexcept nogil
    void fn_gru_forward_steps_f(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, float* g, float* h, float* rh,
                                const float* Pg, const float* Pc, int row_threads, int threads) noexcept nogil
    void fn_gru_backward_steps_f(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const float* g, const float* h,
                                 const float* dh, float* dz, float* drh, float* nxt, float* dh_prev, const float* Pg,
                                 const float* Pc, int row_threads, int threads) noexcept nogil
    void fn_rnn_forward_steps_d(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, double* h, const double* P, int relu,
                                int row_threads, int threads) noexcept nogil
    void fn_rnn_backward_steps_d(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const double* h, const double* dh,
                                 double* dz, double* dh_prev, const double* P, int relu, int row_threads,
                                 int threads) noexcept nogil
    void fn_gru_forward_steps_d(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, double* g, double* h, double* rh,
                                const double* Pg, const double* Pc, int row_threads, int threads) noexcept nogil
    void fn_gru_backward_steps_d(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const double* g, const double* h,
                                 const double* dh, double* dz, double* drh, double* nxt, double* dh_prev, const double* Pg,
                                 const double* Pc, int row_threads, int threads) noexcept nogil
    void fn_activate_f(int kind, Py_ssize_t n, const float* x, float* y, int threads) noexcept nogil
    void fn_activate_d(int kind, Py_ssize_t n, const double* x, double* y, int threads) noexcept nogil


# ---- one name for both element types ----

cdef inline size_t packed_size(bint is_double, Py_ssize_t K, Py_ssize_t N) noexcept nogil:
    return fn_packed_size_d(K, N) if is_double else fn_packed_size_f(K, N)


cdef inline size_t any_scratch(bint is_double, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                               bint trans_a) noexcept nogil:
    return fn_any_scratch_d(M, N, K, trans_a) if is_double else fn_any_scratch_f(M, N, K, trans_a)


cdef inline void pack(Py_ssize_t K, Py_ssize_t N, const floating* src, Py_ssize_t sk, Py_ssize_t sn,
                      floating* P) noexcept nogil:
    if floating is float:
        fn_pack_f(K, N, src, sk, sn, P)
    else:
        fn_pack_d(K, N, src, sk, sn, P)


cdef inline void pack_t(Py_ssize_t K, Py_ssize_t N, const floating* S, Py_ssize_t ls, floating* P) noexcept nogil:
    if floating is float:
        fn_pack_t_f(K, N, S, ls, P)
    else:
        fn_pack_t_d(K, N, S, ls, P)


cdef inline void transpose_matrix(Py_ssize_t rows, Py_ssize_t cols, const floating* A, Py_ssize_t lda,
                                  floating* At, Py_ssize_t ldt) noexcept nogil:
    if floating is float:
        fn_transpose_matrix_f(rows, cols, A, lda, At, ldt)
    else:
        fn_transpose_matrix_d(rows, cols, A, lda, At, ldt)


cdef inline void gemm_nn_mt(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A, Py_ssize_t lda,
                            const floating* P, const floating* bias, floating* C, Py_ssize_t ldc,
                            bint accumulate, int threads) noexcept nogil:
    if floating is float:
        fn_gemm_nn_mt_f(M, N, K, A, lda, P, bias, C, ldc, accumulate, threads)
    else:
        fn_gemm_nn_mt_d(M, N, K, A, lda, P, bias, C, ldc, accumulate, threads)


cdef inline bint gemm_tn2_mt(Py_ssize_t M, Py_ssize_t N1, Py_ssize_t N2, Py_ssize_t R, const floating* A,
                             Py_ssize_t lda, const floating* B1, Py_ssize_t ldb1, const floating* B2,
                             Py_ssize_t ldb2, floating* C, Py_ssize_t ldc, bint accumulate,
                             int threads) noexcept nogil:
    if floating is float:
        return fn_gemm_tn2_mt_f(M, N1, N2, R, A, lda, B1, ldb1, B2, ldb2, C, ldc, accumulate, threads) != 0
    else:
        return fn_gemm_tn2_mt_d(M, N1, N2, R, A, lda, B1, ldb1, B2, ldb2, C, ldc, accumulate, threads) != 0


cdef inline void gemm_list(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                           const floating* const* A, Py_ssize_t lda, const floating* const* B, Py_ssize_t ldb,
                           floating* const* C, Py_ssize_t ldc, const unsigned char* accumulate, Py_ssize_t count,
                           floating* scratch) noexcept nogil:
    if floating is float:
        fn_gemm_list_f(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, count, scratch)
    else:
        fn_gemm_list_d(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, count, scratch)


cdef inline void gemm_any_mt(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                             const floating* A, Py_ssize_t lda, const floating* B, Py_ssize_t ldb,
                             bint accumulate, floating* C, Py_ssize_t ldc, floating* scratch,
                             int threads) noexcept nogil:
    if floating is float:
        fn_gemm_any_mt_f(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, scratch, threads)
    else:
        fn_gemm_any_mt_d(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, scratch, threads)


cdef inline size_t conv_scratch(bint is_double, const fn_conv_geom* g) noexcept nogil:
    return fn_conv_scratch_d(g) if is_double else fn_conv_scratch_f(g)


cdef inline size_t conv_dw_scratch(bint is_double, Py_ssize_t rows) noexcept nogil:
    return fn_conv_dw_scratch_d(rows) if is_double else fn_conv_dw_scratch_f(rows)


cdef inline void conv1_rows(const fn_conv_geom* g, const floating* xp, Py_ssize_t Hp, Py_ssize_t Wp,
                            const floating* wp, Py_ssize_t Cp, Py_ssize_t Cout, const floating* bias, floating* y,
                            Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    if floating is float:
        fn_conv1_rows_f(g, xp, Hp, Wp, wp, Cp, Cout, bias, y, q0, q1)
    else:
        fn_conv1_rows_d(g, xp, Hp, Wp, wp, Cp, Cout, bias, y, q0, q1)


cdef inline void conv1_dw_rows(const fn_conv_geom* g, const floating* xp, Py_ssize_t Hp, Py_ssize_t Wp,
                               const floating* dy, Py_ssize_t Cout, Py_ssize_t Cp, floating* part, Py_ssize_t q0,
                               Py_ssize_t q1, floating* scratch) noexcept nogil:
    if floating is float:
        fn_conv1_dw_rows_f(g, xp, Hp, Wp, dy, Cout, Cp, part, q0, q1, scratch)
    else:
        fn_conv1_dw_rows_d(g, xp, Hp, Wp, dy, Cout, Cp, part, q0, q1, scratch)


cdef inline void conv_forward(const fn_conv_geom* g, const floating* x, Py_ssize_t c0, const floating* P,
                              Py_ssize_t Cog, const floating* bias, floating* y, Py_ssize_t ldy,
                              Py_ssize_t m0, Py_ssize_t m1, const floating* zeros, void** scratch) noexcept nogil:
    if floating is float:
        fn_conv_forward_f(g, x, c0, P, Cog, bias, y, ldy, m0, m1, zeros, scratch)
    else:
        fn_conv_forward_d(g, x, c0, P, Cog, bias, y, ldy, m0, m1, zeros, scratch)


cdef inline void conv_weight_grad(const fn_conv_geom* g, const floating* x, Py_ssize_t c0, const floating* dy,
                                  Py_ssize_t ldy, Py_ssize_t co0, Py_ssize_t Cog, floating* dw, Py_ssize_t ldw,
                                  Py_ssize_t q0, Py_ssize_t q1, void** scratch) noexcept nogil:
    if floating is float:
        fn_conv_weight_grad_f(g, x, c0, dy, ldy, co0, Cog, dw, ldw, q0, q1, scratch)
    else:
        fn_conv_weight_grad_d(g, x, c0, dy, ldy, co0, Cog, dw, ldw, q0, q1, scratch)


cdef inline size_t lstm_packed_size(bint is_double, Py_ssize_t n_a, Py_ssize_t K) noexcept nogil:
    return fn_lstm_packed_size_d(n_a, K) if is_double else fn_lstm_packed_size_f(n_a, K)


cdef inline void lstm_pack(Py_ssize_t n_a, Py_ssize_t K, const floating* W, Py_ssize_t ldw,
                           floating* P) noexcept nogil:
    if floating is float:
        fn_lstm_pack_f(n_a, K, W, ldw, P)
    else:
        fn_lstm_pack_d(n_a, K, W, ldw, P)


cdef inline void lstm_backward_steps(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const floating* g,
                                     const floating* c, const floating* tanh_c, const floating* dh, floating* dc,
                                     floating* dz, floating* dh_prev, const floating* P, int row_threads,
                                     int threads) noexcept nogil:
    if floating is float:
        fn_lstm_backward_steps_f(T, m, n_a, g, c, tanh_c, dh, dc, dz, dh_prev, P, row_threads, threads)
    else:
        fn_lstm_backward_steps_d(T, m, n_a, g, c, tanh_c, dh, dc, dz, dh_prev, P, row_threads, threads)


cdef inline void rnn_forward_steps(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, floating* h, const floating* P,
                                   int relu, int row_threads, int threads) noexcept nogil:
    if floating is float:
        fn_rnn_forward_steps_f(T, m, n_a, h, P, relu, row_threads, threads)
    else:
        fn_rnn_forward_steps_d(T, m, n_a, h, P, relu, row_threads, threads)


cdef inline void rnn_backward_steps(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const floating* h,
                                    const floating* dh, floating* dz, floating* dh_prev, const floating* P,
                                    int relu, int row_threads, int threads) noexcept nogil:
    if floating is float:
        fn_rnn_backward_steps_f(T, m, n_a, h, dh, dz, dh_prev, P, relu, row_threads, threads)
    else:
        fn_rnn_backward_steps_d(T, m, n_a, h, dh, dz, dh_prev, P, relu, row_threads, threads)


cdef inline void gru_forward_steps(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, floating* g, floating* h,
                                   floating* rh, const floating* Pg, const floating* Pc, int row_threads,
                                   int threads) noexcept nogil:
    if floating is float:
        fn_gru_forward_steps_f(T, m, n_a, g, h, rh, Pg, Pc, row_threads, threads)
    else:
        fn_gru_forward_steps_d(T, m, n_a, g, h, rh, Pg, Pc, row_threads, threads)


cdef inline void gru_backward_steps(Py_ssize_t T, Py_ssize_t m, Py_ssize_t n_a, const floating* g,
                                    const floating* h, const floating* dh, floating* dz, floating* drh,
                                    floating* nxt, floating* dh_prev, const floating* Pg, const floating* Pc,
                                    int row_threads, int threads) noexcept nogil:
    if floating is float:
        fn_gru_backward_steps_f(T, m, n_a, g, h, dh, dz, drh, nxt, dh_prev, Pg, Pc, row_threads, threads)
    else:
        fn_gru_backward_steps_d(T, m, n_a, g, h, dh, dz, drh, nxt, dh_prev, Pg, Pc, row_threads, threads)


cdef inline void activate(int kind, Py_ssize_t n, const floating* x, floating* y, int threads) noexcept nogil:
    if floating is float:
        fn_activate_f(kind, n, x, y, threads)
    else:
        fn_activate_d(kind, n, x, y, threads)
