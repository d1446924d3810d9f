// The f32 GEMM of the CPU path, written out:
//
//   C (M, N)  =  op(A) (M, K)  @  op(B) (K, N)        [ += when accumulate ]
//
// with the conventions of tensor/matmul.h (row-major, contiguous; op(X) = X or X^T as stored).
//
// How it is fast: the layout of GotoBLAS / BLIS, seen from a row-major C.
//  * The micro-kernel holds a tile of C (kernel_rows x kernel_cols) in vector registers for the whole
//    loop over k. Per k it loads kernel_cols values of B as whole vectors, broadcasts kernel_rows
//    values of A, and does one fused multiply-add per (row, vector). C is read and written once per
//    block of k, never inside the loop.
//  * B is copied ("packed") into panels kernel_cols wide, so that those loads are contiguous, aligned
//    and in the order the kernel reads them. A block of panels is sized to stay in the L2 cache while
//    every row of A passes over it. A is read where it lies (a broadcast takes any address), so only
//    B is ever copied.
//  * Threads split C into rectangles; each packs the B columns of its own. Every element of C is
//    summed by one thread in one fixed order, so the result does not depend on the thread count.
//
// The simple version it is tested against is Eigen's product (tensor/matmul.cpp, which picks this
// kernel for f32 products large enough to repay the packing; LOLCATS_GEMM=eigen forces Eigen).
#pragma once
#include "tensor/matmul_options.h"

namespace lolcats {

// C (M, N) = op(A) op(B), or += (tensor/matmul.h's conventions).
void gemm_packed(float* c, const float* a, const float* b, int M, int N, int K, Transpose t,
                 Accumulate acc = Accumulate::no);

// The register tile of this build's kernel (it depends on the vector width the build targets:
// 8 x 48 with AVX-512, 6 x 16 with AVX2, 4 x 8 otherwise). Tests use it to hit every edge case.
int gemm_kernel_rows();
int gemm_kernel_cols();

// True where the kernel has hand-picked vectors (AVX2 + FMA or AVX-512). Elsewhere it is built on
// GCC's generic vectors, correct but slower than Eigen, and tensor/matmul.cpp leaves it unused.
bool gemm_simd_target();

// The machine's f32 FMA ceiling in GFLOP/s with this build's vectors and `threads` threads
// (./bench matmul reports each GEMM as a share of it). Runs for about `seconds`.
double fma_ceiling_gflops(int threads, double seconds = 0.6);

}  // namespace lolcats
