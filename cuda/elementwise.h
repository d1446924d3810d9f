// Elementwise ops on the GPU: the CUDA twins of tensor/elementwise.h (derivations there), plus the
// bf16 <-> f32 casts of mixed precision. n contiguous values; gradients are written (=), never
// accumulated; any output may alias an input of the same index (in place). T is float or bf16
// storage; all arithmetic is f32.
//
//   add:     y = a + b            (the residual add)   da = dy,  db = dy
//   mul:     y = a * b            da = dy * b,  db = dy * a
//   scale:   y = s * a            da = s * dy
//   silu:    y = x * sigmoid(x)   dx = dy * sigmoid(x) * (1 + x * (1 - sigmoid(x)))
//   swiglu:  y = silu(g) * u      dg = dy * u * silu'(g),  du = dy * silu(g)
//   casts:   f32 -> bf16 rounds to nearest, ties to even (as tensor/bf16.h); bf16 -> f32 is exact
// Gradient outputs documented "may be null" are skipped when null.
#pragma once
#include <cstdint>

#include "cuda/api.h"

namespace lolcats::cuda {

template <typename T>
void add_forward(T* y,        // (n)
                 const T* a,  // (n)
                 const T* b,  // (n)
                 int64_t n, Stream stream);
template <typename T>
void add_backward(T* da,        // (n), may be null
                  T* db,        // (n), may be null
                  const T* dy,  // (n)
                  int64_t n, Stream stream);

template <typename T>
void mul_forward(T* y,        // (n)
                 const T* a,  // (n)
                 const T* b,  // (n)
                 int64_t n, Stream stream);
template <typename T>
void mul_backward(T* da,        // (n), may be null
                  T* db,        // (n), may be null
                  const T* dy,  // (n)
                  const T* a,   // (n)
                  const T* b,   // (n)
                  int64_t n, Stream stream);

template <typename T>
void scale_forward(T* y,        // (n)
                   const T* a,  // (n)
                   float s, int64_t n, Stream stream);
template <typename T>
void scale_backward(T* da,        // (n)
                    const T* dy,  // (n)
                    float s, int64_t n, Stream stream);

template <typename T>
void silu_forward(T* y,        // (n)
                  const T* x,  // (n)
                  int64_t n, Stream stream);
template <typename T>
void silu_backward(T* dx,        // (n)
                   const T* dy,  // (n)
                   const T* x,   // (n)
                   int64_t n, Stream stream);

template <typename T>
void swiglu_forward(T* y,           // (n)
                    const T* gate,  // (n)
                    const T* up,    // (n)
                    int64_t n, Stream stream);
template <typename T>
void swiglu_backward(T* dgate,       // (n), may be null
                     T* dup,         // (n), may be null
                     const T* dy,    // (n)
                     const T* gate,  // (n)
                     const T* up,    // (n)
                     int64_t n, Stream stream);

void cast_f32_to_bf16(bf16* y,         // (n)
                      const float* x,  // (n)
                      int64_t n, Stream stream);
void cast_bf16_to_f32(float* y,       // (n)
                      const bf16* x,  // (n)
                      int64_t n, Stream stream);

}  // namespace lolcats::cuda
