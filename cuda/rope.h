// Rotary position embedding on the GPU: the CUDA twin of tensor/rope.h (layouts, Llama 3.1 scaling
// and derivation there). The cos/sin tables are f32, made on the host by lolcats::rope_tables (from
// rope_inv_freq, which applies the Llama 3.1 scaling) and uploaded once.
//
//   forward:  each pair (a, b) of a head vector at time t, pair index i:
//             (a, b) -> (a cos[t,i] - b sin[t,i],  a sin[t,i] + b cos[t,i])
//   backward: the rotation by minus the angle (a rotation's inverse is its transpose)
// Pairs are (x[i], x[i + D/2]) for RopeLayout::half_split, (x[2i], x[2i+1]) for interleaved.
// y may equal x (in place); dx may equal dy.
#pragma once
#include "cuda/api.h"
#include "tensor/rope.h"

namespace lolcats::cuda {

template <typename T>
void rope_forward(T* y,                // (B, T, H, D); may equal x
                  const T* x,          // (B, T, H, D)
                  const float* cos_t,  // (T, D/2)
                  const float* sin_t,  // (T, D/2)
                  int B, int T_, int H, int D, RopeLayout layout, Stream stream);

template <typename T>
void rope_backward(T* dx,               // (B, T, H, D), written; may equal dy
                   const T* dy,         // (B, T, H, D)
                   const float* cos_t,  // (T, D/2)
                   const float* sin_t,  // (T, D/2)
                   int B, int T_, int H, int D, RopeLayout layout, Stream stream);

}  // namespace lolcats::cuda
