/* Every kernel body for one tier and element type (fn_instance.h includes this file
 * for float and for double, with the tier's and the type's macros defined; no
 * include guard), and the undefinitions that let the next instance begin. */

#include "fn_simd.h"
#include "fn_math.h"
#include "fn_gemm.h"
#include "fn_lstm.h"
#include "fn_rnn.h"
#include "fn_pool.h"
#include "fn_dense.h"
#include "fn_loss.h"
#include "fn_norm.h"
#include "fn_optim.h"
#include "fn_dropout.h"
#include "fn_embedding.h"
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
