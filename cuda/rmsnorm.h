// RMSNorm on the GPU: the CUDA twin of tensor/rmsnorm.h (the math and the backward derivation are
// there). T is the storage type of activations and weights (float or bf16); rstd, the arithmetic and
// the weight gradient are f32.
//
//   forward:  rstd[n] = 1 / sqrt(mean_c x[n,c]^2 + eps),   y[n,c] = w[c] * (x[n,c] * rstd[n])
//   backward: dx[n,c] = r (w_c dy_c - xhat_c mean_j(w_j dy_j xhat_j))      (written, =)
//             dw[c]  += sum_n dy[n,c] xhat[n,c]                             (accumulated, +=)
// dw may be null (a frozen weight has no gradient); so may dx (nothing upstream needs it).
#pragma once
#include "cuda/api.h"

namespace lolcats::cuda {

template <typename T>
void rmsnorm_forward(T* y,             // (N, C)
                     float* rstd,      // (N); may be null (inference)
                     const T* x,       // (N, C)
                     const T* w,       // (C)
                     int N, int C, float eps, Stream stream);

template <typename T>
void rmsnorm_backward(T* dx,              // (N, C), written; may be null
                      float* dw,          // (C), accumulated; may be null
                      const T* dy,        // (N, C)
                      const T* x,         // (N, C)
                      const T* w,         // (C)
                      const float* rstd,  // (N), saved by the forward
                      int N, int C, Stream stream);

}  // namespace lolcats::cuda
