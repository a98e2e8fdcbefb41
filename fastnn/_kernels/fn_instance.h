/* One tier's kernels for float and double: fn_kernels.h includes this file once
 * per tier, with the tier's FN_TIER_ID, FN_TIER_NAME, FN_TARGET, FN_VBYTES, FN_MR,
 * FN_NV and FN_LMR defined (no include guard). */

#define FN_T float
#define FN_TS f
#define FN_DOUBLE 0
#define FN_LSTM_IO fn_lstm_io_f
#include "fn_simd.h"
#include "fn_math.h"
#include "fn_gemm.h"
#include "fn_lstm.h"
#include "fn_rnn.h"
#include "fn_pool.h"
#undef FN_T
#undef FN_TS
#undef FN_DOUBLE
#undef FN_LSTM_IO
#undef FN_V
#undef FN_VI
#undef FN_VB
#undef FN_VL
#undef FN_MASK
#undef FN_STREAM_ALIGN

#define FN_T double
#define FN_TS d
#define FN_DOUBLE 1
#define FN_LSTM_IO fn_lstm_io_d
#include "fn_simd.h"
#include "fn_math.h"
#include "fn_gemm.h"
#include "fn_lstm.h"
#include "fn_rnn.h"
#include "fn_pool.h"
#undef FN_T
#undef FN_TS
#undef FN_DOUBLE
#undef FN_LSTM_IO
#undef FN_V
#undef FN_VI
#undef FN_VB
#undef FN_VL
#undef FN_MASK
#undef FN_STREAM_ALIGN
