// The part of cuBLASLt the project uses, for the SIMT emulator build: the same entry points and
// the same rules as the library, so that cuda/gemm.cu's descriptors (column-major layouts,
// transposes, leading dimensions, strided batches, alpha/beta, the bias epilogue) are exercised in
// `make test`, and only the library's own kernels wait for a GPU.
//
//   D = alpha * op(A) @ op(B) + beta * C  (+ bias[row], broadcast over columns)
//   every matrix column-major: element (r, c) at ptr[r + c * ld], batch b at ptr + b * stride;
//   op(A) is (m, k): A's layout is (m, k) with TRANSA = N, (k, m) with T. C is not read when
//   beta == 0 (it may hold anything, as in BLAS). Inputs bf16 or f32, accumulation in f32.
// Anything else the project does not use is refused with CUBLAS_STATUS_NOT_SUPPORTED rather than
// computed wrongly.
//
// Alignment, as the library has it: the heuristic picks an algorithm for operands aligned as the
// preference's MIN_ALIGNMENT_{A,B,C,D}_BYTES say (256 bytes when unset), and the algorithm may use
// loads that need that much. So the algorithm remembers what it was chosen for, and cublasLtMatmul
// refuses an operand less aligned than that (on a GPU: undefined behaviour or a refusal), which is
// what keeps a cache of algorithms honest about the alignment it is keyed by.
//
// A matmul on a stream that the emulator queues (asynchronous streams, cuda/emu/streams.h) is
// queued with copies of its descriptors, as the library reads them when it is called.
#include <cublasLt.h>

#include <Eigen/Dense>
#include <cstdint>
#include <vector>

#include "cuda/emu/streams.h"
#include "tensor/bf16.h"

namespace {

struct Layout {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t stride = 0;
};

struct MatmulDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int32_t bias_type = -1;  // -1: the type of D
  int64_t bias_stride = 0;
};

struct Preference {
  uint64_t max_workspace = 0;
  uint32_t min_alignment[4] = {256, 256, 256, 256};  // A, B, C, D: the library's default
};

// Where an algorithm (an opaque 64-byte blob in the library) keeps the alignments it was chosen for.
constexpr int kAlgoAlignment = 0;  // data[0..3]: A, B, C, D

template <typename T>
cublasStatus_t get(const void* buf, size_t n, T* out) {
  if (n != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(out, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

bool supported_type(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }

float load(const void* p, cudaDataType t, int64_t i) {
  return t == CUDA_R_32F ? static_cast<const float*>(p)[i]
                         : lolcats::bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}
void store(void* p, cudaDataType t, int64_t i, float v) {
  if (t == CUDA_R_32F) static_cast<float*>(p)[i] = v;
  else static_cast<uint16_t*>(p)[i] = lolcats::f32_to_bf16(v);
}

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

// The logical (rows, cols) matrix of op(X) for batch b, widened to f32.
Mat operand(const void* p, const Layout& l, bool trans, int b) {
  int64_t off = int64_t(b) * l.stride;
  Mat m(trans ? l.cols : l.rows, trans ? l.rows : l.cols);
  for (uint64_t c = 0; c < l.cols; c++)
    for (uint64_t r = 0; r < l.rows; r++) {
      float v = load(p, l.type, off + int64_t(r) + int64_t(c) * l.ld);
      if (trans) m(int64_t(c), int64_t(r)) = v;
      else m(int64_t(r), int64_t(c)) = v;
    }
  return m;
}

// D = alpha op(A) op(B) + beta C (+ bias), the shapes already checked.
void matmul(const MatmulDesc& d, const Layout& a, const Layout& b, const Layout& c, const Layout& dl,
            float alpha, const void* A, const void* B, float beta, const void* C, void* D) {
  cudaDataType bias_type = d.bias_type < 0 ? dl.type : cudaDataType(d.bias_type);
  for (int bt = 0; bt < dl.batch; bt++) {
    Mat prod = operand(A, a, d.trans_a == CUBLAS_OP_T, bt) * operand(B, b, d.trans_b == CUBLAS_OP_T, bt);
    int64_t c_off = int64_t(bt) * c.stride, d_off = int64_t(bt) * dl.stride;
    for (uint64_t j = 0; j < dl.cols; j++)
      for (uint64_t i = 0; i < dl.rows; i++) {
        float v = alpha * prod(int64_t(i), int64_t(j));
        if (beta != 0.0f) v += beta * load(C, c.type, c_off + int64_t(i) + int64_t(j) * c.ld);
        if (d.epilogue == CUBLASLT_EPILOGUE_BIAS)
          v += load(d.bias, bias_type, int64_t(bt) * d.bias_stride + int64_t(i));
        store(D, dl.type, d_off + int64_t(i) + int64_t(j) * dl.ld, v);
      }
  }
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = reinterpret_cast<cublasLtHandle_t>(new char);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete reinterpret_cast<char*>(handle);
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS (emulated)";
  }
}
const char* cublasLtGetStatusString(cublasStatus_t s) { return cublasLtGetStatusName(s); }

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* out, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (!supported_type(type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (ld < int64_t(rows > 0 ? rows : 1)) return CUBLAS_STATUS_INVALID_VALUE;  // column-major
  *out = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete reinterpret_cast<Layout*>(l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t n) {
  Layout& l = *reinterpret_cast<Layout*>(layout);
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return get(buf, n, &l.batch);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return get(buf, n, &l.stride);
    case CUBLASLT_MATRIX_LAYOUT_ORDER: {
      int32_t order;
      cublasStatus_t s = get(buf, n, &order);
      return s != CUBLAS_STATUS_SUCCESS ? s
             : order == CUBLASLT_ORDER_COL ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
    }
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* out, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *out = reinterpret_cast<cublasLtMatmulDesc_t>(new MatmulDesc{compute, scale});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete reinterpret_cast<MatmulDesc*>(d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t n) {
  MatmulDesc& d = *reinterpret_cast<MatmulDesc*>(desc);
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return get(buf, n, &d.trans_a);
    case CUBLASLT_MATMUL_DESC_TRANSB: return get(buf, n, &d.trans_b);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return get(buf, n, &d.epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return get(buf, n, &d.bias);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return get(buf, n, &d.bias_type);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: return get(buf, n, &d.bias_stride);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(new Preference);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete reinterpret_cast<Preference*>(pref);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t n) {
  Preference& p = *reinterpret_cast<Preference*>(pref);
  switch (attr) {  // hints for the algorithm choice; the emulator has one algorithm
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return get(buf, n, &p.max_workspace);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return get(buf, n, &p.min_alignment[0]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return get(buf, n, &p.min_alignment[1]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return get(buf, n, &p.min_alignment[2]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return get(buf, n, &p.min_alignment[3]);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

// The shapes must agree as the library requires: op(A) (m, k), op(B) (k, n), C and D (m, n), one
// batch count (or 1 for a broadcast operand is NOT allowed: cuBLASLt wants equal counts).
static cublasStatus_t check_shapes(const MatmulDesc& d, const Layout& a, const Layout& b,
                                   const Layout& c, const Layout& dl) {
  bool ta = d.trans_a == CUBLAS_OP_T, tb = d.trans_b == CUBLAS_OP_T;
  if ((d.trans_a != CUBLAS_OP_N && !ta) || (d.trans_b != CUBLAS_OP_N && !tb))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  uint64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols;
  uint64_t kb = tb ? b.cols : b.rows, n = tb ? b.rows : b.cols;
  if (k != kb || dl.rows != m || dl.cols != n || c.rows != m || c.cols != n)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (a.batch != dl.batch || b.batch != dl.batch || c.batch != dl.batch)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (d.epilogue != CUBLASLT_EPILOGUE_DEFAULT && d.epilogue != CUBLASLT_EPILOGUE_BIAS)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (d.epilogue == CUBLASLT_EPILOGUE_BIAS && !d.bias) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t op,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int* count) {
  if (requested <= 0) return CUBLAS_STATUS_INVALID_VALUE;
  cublasStatus_t s = check_shapes(*reinterpret_cast<MatmulDesc*>(op), *reinterpret_cast<Layout*>(a),
                                  *reinterpret_cast<Layout*>(b), *reinterpret_cast<Layout*>(c),
                                  *reinterpret_cast<Layout*>(d));
  if (s != CUBLAS_STATUS_SUCCESS) {
    *count = 0;
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  std::memset(&results[0], 0, sizeof results[0]);
  const Preference& p = *reinterpret_cast<Preference*>(pref);
  for (int i = 0; i < 4; i++) results[0].algo.data[kAlgoAlignment + i] = p.min_alignment[i];
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *count = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t op, const void* alpha_p,
                              const void* A, cublasLtMatrixLayout_t a_desc, const void* B,
                              cublasLtMatrixLayout_t b_desc, const void* beta_p, const void* C,
                              cublasLtMatrixLayout_t c_desc, void* D, cublasLtMatrixLayout_t d_desc,
                              const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t stream) {
  const MatmulDesc& d = *reinterpret_cast<MatmulDesc*>(op);
  const Layout &a = *reinterpret_cast<Layout*>(a_desc), &b = *reinterpret_cast<Layout*>(b_desc);
  const Layout &c = *reinterpret_cast<Layout*>(c_desc), &dl = *reinterpret_cast<Layout*>(d_desc);
  cublasStatus_t s = check_shapes(d, a, b, c, dl);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  if (algo) {  // without one the library chooses for the pointers it is given
    const void* operands[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++) {
      uint64_t need = algo->data[kAlgoAlignment + i];
      if (need > 1 && reinterpret_cast<uintptr_t>(operands[i]) % need != 0)
        return CUBLAS_STATUS_NOT_SUPPORTED;  // less aligned than the algorithm was chosen for
    }
  }
  float alpha = *static_cast<const float*>(alpha_p), beta = *static_cast<const float*>(beta_p);
  if (lolcats::emu::queues(stream)) {
    lolcats::emu::enqueue(stream, [d, a, b, c, dl, alpha, A, B, beta, C, D] {
      matmul(d, a, b, c, dl, alpha, A, B, beta, C, D);
    });
  } else {
    lolcats::emu::legacy_stream_point();
    matmul(d, a, b, c, dl, alpha, A, B, beta, C, D);
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
