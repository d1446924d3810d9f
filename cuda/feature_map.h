// LoLCATs feature maps on CUDA: the twins of lolcats/feature_map.h (Hedgehog and T2R), whose header
// gives the math. The projections z = x W[h] and their backward are matrix products per head, each
// done for all H heads by one strided-batched cuda::gemm (f32) on per-map copies xg (H, rows, D) of
// x's heads (with GQA several maps read one head of x); the softmax pair,
// the relu and their backward are small elementwise kernels in between (one warp per row and head
// for the softmax pair).
// Storage: x and dx in T (float or bf16); weights, features phi and every gradient but dx in f32.
#pragma once
#include "cuda/api.h"

namespace lolcats::cuda {

// phi (B, T_, H, 2 Fh); x (B, T_, Hx, D); W (H, D, Fh).
template <typename T>
void hedgehog_forward(float* phi, const T* x, const float* W, int B, int T_, int H, int Hx, int D, int Fh,
                      Stream stream);
// dx written (may be null); dW accumulated (may be null).
template <typename T>
void hedgehog_backward(T* dx, float* dW, const float* dphi, const float* phi, const T* x, const float* W, int B,
                       int T_, int H, int Hx, int D, int Fh, Stream stream);

// phi (B, T_, H, F); W (H, D, F); bias (H, F).
template <typename T>
void t2r_forward(float* phi, const T* x, const float* W, const float* bias, int B, int T_, int H, int Hx, int D,
                 int F, Stream stream);
// dx written (may be null); dW, dbias accumulated (may be null).
template <typename T>
void t2r_backward(T* dx, float* dW, float* dbias, const float* dphi, const float* phi, const T* x, const float* W,
                  int B, int T_, int H, int Hx, int D, int F, Stream stream);

}  // namespace lolcats::cuda
