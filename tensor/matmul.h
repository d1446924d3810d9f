// Matrix multiply, the op that does almost all the FLOPs of a transformer.
//
//   C (M, N)  =  op(A) (M, K)  @  op(B) (K, N)        [ += instead of = with Accumulate::yes ]
//   op(A) = A, stored (M, K), or A^T with A stored (K, M) (Transpose::a or both); likewise op(B).
//
// Backward of C = op(A) op(B), with dC (M, N):
//   d op(A) = dC op(B)^T   (M, K)        d op(B) = op(A)^T dC   (K, N)
// and when A was stored transposed, dA is the transpose of d op(A): dA = op(B) dC^T (K, M).
// Each case is again one call of matmul with the right transposes, so the backward below is four
// lines and needs no kernel of its own.
//
// Batched: `batch` independent products, matrices contiguous one after another.
// All matrices are row-major and contiguous. On the CPU, f32 products of at least 64 rows go to our
// own packed kernel (tensor/gemm.h); the rest, and every double product, map the matrices as Eigen
// matrices (no copy) and let Eigen's blocked, vectorised GEMM do the work.
#pragma once
#include <cstdint>

#include "tensor/matmul_options.h"

namespace lolcats {

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int batch, int M, int N, int K,
                    Transpose t = Transpose::none, Accumulate acc = Accumulate::no);

// da / db may be null (no gradient wanted). acc_da / acc_db: add into the buffer instead of writing.
template <typename T>
void matmul_backward(T* da, T* db, const T* dc, const T* a, const T* b, int batch, int M, int N,
                     int K, Transpose t, Accumulate acc_da, Accumulate acc_db);

// The simple version of the f32 CPU product: Eigen's GEMM whatever the sizes, one product (the
// packed kernel is tested against it, and ./bench matmul times it as its `eigen` side).
void matmul_eigen(float* c, const float* a, const float* b, int M, int N, int K, Transpose t,
                  Accumulate acc = Accumulate::no);

// Whether an f32 product of C (M, N) goes to the packed kernel (tensor/gemm.h) rather than Eigen.
bool use_packed_gemm(int M, int N);

// Tensor-level entry points (tensor/device.h), sizes as above and checked against the tensors'.
// cpu: all f32. cuda: a and b both f32 or both bf16; c (and each gradient) of their dtype, or f32
// (a parameter's gradient in f32 from bf16 activations).
class Tensor;
void matmul_forward(Tensor& c, const Tensor& a, const Tensor& b, int batch, int M, int N, int K,
                    Transpose t = Transpose::none, Accumulate acc = Accumulate::no);
void matmul_backward(Tensor* da, Tensor* db, const Tensor& dc, const Tensor& a, const Tensor& b,
                     int batch, int M, int N, int K, Transpose t, Accumulate acc_da, Accumulate acc_db);

}  // namespace lolcats
