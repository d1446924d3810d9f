// Matrix multiply on the GPU: one gemm() over cuBLASLt, and the matmul twins built on it.
//
// One convention, the CPU's (tensor/matmul.h): every matrix row-major and contiguous,
//   C (M, N)  =  op(A) (M, K) @ op(B) (K, N)   [+ C when accumulate]   [+ bias (N) on every row]
//   op(A) = A stored (M, K), or A^T with A stored (K, M) when trans_a; likewise B.
//   batch > 1: `batch` independent products, each operand's matrices one after another.
// Arithmetic: f32 accumulation always (CUBLAS_COMPUTE_32F, never TF32). Operand types: A and B both
// f32 or both bf16; C f32 or bf16 (bf16 A/B into an f32 C is how parameter gradients accumulate).
//
// cuBLASLt is column-major. A row-major (M, N) matrix is the column-major (N, M) matrix C^T, and
//   C^T = op(B)^T op(A)^T,
// so gemm() asks cuBLASLt for D = B' A' with m = N, n = M: our B as its "A", our A as its "B", and
// each stored matrix read as the column-major transpose of itself (details in cuda/gemm.cu).
// Under the SIMT emulator, cuda/emu/cublaslt.cpp follows the library's rules on the CPU, so this
// descriptor logic is what `make test` checks.
#pragma once
#include <cstdint>

#include "cuda/api.h"
#include "tensor/matmul_options.h"

namespace lolcats::cuda {

struct GemmShape {
  int batch = 1;
  int M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  bool accumulate = false;  // C += op(A) op(B) instead of C = ...
  GemmShape(int batch_, int M_, int N_, int K_, Transpose t = Transpose::none, Accumulate acc = Accumulate::no)
      : batch(batch_), M(M_), N(N_), K(K_), trans_a(transposes_a(t)), trans_b(transposes_b(t)),
        accumulate(acc == Accumulate::yes) {}
};

// bias (N), of C's type, or null.
void gemm(float* c, const float* a, const float* b, const GemmShape& g, const float* bias = nullptr,
          Stream stream = nullptr);
void gemm(bf16* c, const bf16* a, const bf16* b, const GemmShape& g, const bf16* bias = nullptr,
          Stream stream = nullptr);
void gemm(float* c, const bf16* a, const bf16* b, const GemmShape& g, const float* bias = nullptr,
          Stream stream = nullptr);

// The plan cache (cuda/gemm.cu): cuBLASLt's layouts, matmul descriptor and chosen algorithm, kept
// per (types, shape, transposes, bias or not, operand alignments, workspace size) for the life of
// the program, so that a repeated shape asks cuBLASLt's heuristic only once. Thread-safe.
struct GemmPlanStats {
  uint64_t hits = 0, misses = 0;  // gemm calls that found / had to make their plan
  uint64_t plans = 0;             // plans held
};
GemmPlanStats gemm_plan_stats();

// The CPU twins' signatures (tensor/matmul.h): C = op(A) op(B), and its backward
//   d op(A) = dC op(B)^T,  d op(B) = op(A)^T dC   (transposed back when the operand was stored so).
// da / db may be null; acc_da / acc_db: add into the buffer instead of writing it.
template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int batch, int M, int N, int K, Transpose t, Accumulate acc,
                    Stream stream = nullptr);
template <typename T, typename TG>
void matmul_backward(TG* da, TG* db, const T* dc, const T* a, const T* b, int batch, int M, int N,
                     int K, Transpose t, Accumulate acc_da, Accumulate acc_db, Stream stream = nullptr);

}  // namespace lolcats::cuda
