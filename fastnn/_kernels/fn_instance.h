/* One tier's kernels for float and double: fn_kernels.h includes this file once
 * per tier, with the tier's FN_TIER_ID, FN_TIER_NAME, FN_TARGET, FN_VBYTES, FN_MR,
 * FN_NV, FN_MRT, FN_LMR and FN_LGV defined, and undefines them after (no include guard). */

#define FN_T float
#define FN_TS f
#define FN_DOUBLE 0
#define FN_LSTM_IO fn_lstm_io_f
#include "fn_bodies.h"

#define FN_T double
#define FN_TS d
#define FN_DOUBLE 1
#define FN_LSTM_IO fn_lstm_io_d
#include "fn_bodies.h"

#undef FN_TIER_ID
#undef FN_TIER_NAME
#undef FN_TARGET
#undef FN_VBYTES
#undef FN_MR
#undef FN_NV
#undef FN_MRT
#undef FN_LMR
#undef FN_LGV
