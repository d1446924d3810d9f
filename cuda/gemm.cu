// gemm() over cuBLASLt; see cuda/gemm.h for the convention and the row-major trick.
#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/gemm.h"

namespace lolcats::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's recommendation for Hopper

struct Library {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  Library() {
    cublasCheck(cublasLtCreate(&handle));
    cudaCheck(cudaMalloc(&workspace, kWorkspaceBytes));
  }
};
Library& library() {
  static Library lib;  // created at the first gemm; lives as long as the program
  return lib;
}

template <typename T>
constexpr cudaDataType_t data_type() {
  return std::is_same<T, float>::value ? CUDA_R_32F : CUDA_R_16BF;
}

// Largest power of two (up to 256) that divides the address: what cuBLASLt may assume.
uint32_t alignment(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al /= 2;
  return al;
}

// A stored row-major matrix (rows, cols) is the column-major (cols, rows) matrix with ld = cols.
struct Desc {
  cublasLtMatrixLayout_t layout = nullptr;
  Desc(cudaDataType_t type, int rows, int cols, int batch) {
    cublasCheck(cublasLtMatrixLayoutCreate(&layout, type, uint64_t(cols), uint64_t(rows), int64_t(cols)));
    if (batch > 1) {
      int64_t stride = int64_t(rows) * cols;
      cublasCheck(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
      cublasCheck(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
  }
  ~Desc() { cublasLtMatrixLayoutDestroy(layout); }
};

template <typename TC, typename TAB>
void gemm_impl(TC* c, const TAB* a, const TAB* b, const GemmShape& g, const TC* bias, Stream stream) {
  ENSURE(g.batch >= 1 && g.M >= 0 && g.N >= 0 && g.K >= 0, "gemm: bad shape batch %d, M %d, N %d, K %d",
         g.batch, g.M, g.N, g.K);
  if (g.M == 0 || g.N == 0) return;
  ENSURE(g.K > 0, "gemm: K = 0 (an empty inner dimension) is not supported");
  Library& lib = library();

  // cuBLASLt's "A" is our B: stored (K, N), or (N, K) when trans_b. Read column-major, the stored
  // matrix is its own transpose: (N, K) as needed when !trans_b (op N), (K, N) when trans_b (op T).
  // Likewise its "B" is our A, and its (m, n) output is our C^T: m = N, n = M.
  Desc la(data_type<TAB>(), g.trans_b ? g.N : g.K, g.trans_b ? g.K : g.N, g.batch);
  Desc lb(data_type<TAB>(), g.trans_a ? g.K : g.M, g.trans_a ? g.M : g.K, g.batch);
  Desc lc(data_type<TC>(), g.M, g.N, g.batch);

  cublasLtMatmulDesc_t op;
  cublasCheck(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  int32_t opa = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, opb = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  if (bias) {
    // cuBLASLt adds the bias per row of its column-major output, i.e. per column of our C.
    uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    int32_t bias_type = data_type<TC>();
    cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
  }

  cublasLtMatmulPreference_t pref;
  cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = kWorkspaceBytes;
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  // The heuristic assumes 256-byte aligned operands unless told otherwise; ours may be less.
  uint32_t al_a = alignment(b), al_b = alignment(a), al_c = alignment(c);
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));

  cublasLtMatmulHeuristicResult_t heuristic;
  int found = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lib.handle, op, la.layout, lb.layout, lc.layout,
                                                     lc.layout, pref, 1, &heuristic, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatmulDescDestroy(op);
    fail(__FILE__, __LINE__,
         strfmt("gemm: cuBLASLt has no algorithm for batch %d, M %d, N %d, K %d, trans_a %d, "
                "trans_b %d, bias %d (%s)",
                g.batch, g.M, g.N, g.K, int(g.trans_a), int(g.trans_b), bias != nullptr,
                cublasLtGetStatusString(st)));
  }
  const float alpha = 1.0f, beta = g.accumulate ? 1.0f : 0.0f;
  st = cublasLtMatmul(lib.handle, op, &alpha, b, la.layout, a, lb.layout, &beta, c, lc.layout, c,
                      lc.layout, &heuristic.algo, lib.workspace, kWorkspaceBytes, stream);
  cublasLtMatmulDescDestroy(op);
  cublasCheck(st);
}

}  // namespace

void gemm(float* c, const float* a, const float* b, const GemmShape& g, const float* bias, Stream s) {
  gemm_impl(c, a, b, g, bias, s);
}
void gemm(bf16* c, const bf16* a, const bf16* b, const GemmShape& g, const bf16* bias, Stream s) {
  gemm_impl(c, a, b, g, bias, s);
}
void gemm(float* c, const bf16* a, const bf16* b, const GemmShape& g, const float* bias, Stream s) {
  gemm_impl(c, a, b, g, bias, s);
}

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int batch, int M, int N, int K, Transpose t, Accumulate acc,
                    Stream s) {
  gemm(c, a, b, GemmShape{batch, M, N, K, t, acc}, nullptr, s);
}

// The same four cases as the CPU's matmul_backward (tensor/matmul.cpp), each one gemm.
template <typename T, typename TG>
void matmul_backward(TG* da, TG* db, const T* dc, const T* a, const T* b, int batch, int M, int N,
                     int K, Transpose t, Accumulate acc_da, Accumulate acc_db, Stream s) {
  const bool trans_a = transposes_a(t), trans_b = transposes_b(t);
  if (da) {
    if (!trans_a)  // dA (M,K) = dC (M,N) @ op(B)^T
      gemm(da, dc, b, GemmShape{batch, M, K, N, transpose_of(false, !trans_b), acc_da}, nullptr, s);
    else  // dA (K,M) = op(B) (K,N) @ dC^T
      gemm(da, b, dc, GemmShape{batch, K, M, N, transpose_of(trans_b, true), acc_da}, nullptr, s);
  }
  if (db) {
    if (!trans_b)  // dB (K,N) = op(A)^T @ dC
      gemm(db, a, dc, GemmShape{batch, K, N, M, transpose_of(!trans_a, false), acc_db}, nullptr, s);
    else  // dB (N,K) = dC^T @ op(A)
      gemm(db, dc, a, GemmShape{batch, N, K, M, transpose_of(true, trans_a), acc_db}, nullptr, s);
  }
}

#define MATMUL_ARGS int, int, int, int, Transpose
template void matmul_forward<float>(float*, const float*, const float*, MATMUL_ARGS, Accumulate, Stream);
template void matmul_forward<bf16>(bf16*, const bf16*, const bf16*, MATMUL_ARGS, Accumulate, Stream);
template void matmul_backward<float, float>(float*, float*, const float*, const float*, const float*, MATMUL_ARGS,
                                            Accumulate, Accumulate, Stream);
template void matmul_backward<bf16, bf16>(bf16*, bf16*, const bf16*, const bf16*, const bf16*, MATMUL_ARGS, Accumulate,
                                          Accumulate, Stream);
template void matmul_backward<bf16, float>(float*, float*, const bf16*, const bf16*, const bf16*, MATMUL_ARGS,
                                           Accumulate, Accumulate, Stream);
#undef MATMUL_ARGS

}  // namespace lolcats::cuda
