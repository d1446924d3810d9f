// Mean squared error on the GPU: the CUDA twin of mse_forward/mse_backward in tensor/loss.h.
//
//   forward:  *loss = (1/n) sum_i (a_i - b_i)^2        (one f32 on the device; 0 when n = 0)
//   backward: da_i = dloss 2 (a_i - b_i) / n,  db_i = -da_i      (written, =)
// The sum is deterministic: per-block partial sums in a fixed order, then one block adds the
// partials in block order (no float atomics), so the same input gives the same bits every run.
#pragma once
#include <cstdint>

#include "cuda/api.h"

namespace lolcats::cuda {

template <typename T>
void mse_forward(float* loss,  // (1), device memory
                 const T* a,   // (n)
                 const T* b,   // (n)
                 int64_t n, Stream stream);

template <typename T>
void mse_backward(T* da,        // (n), may be null
                  T* db,        // (n), may be null
                  float dloss,  // the gradient arriving at the loss (1 when it is the output)
                  const T* a,   // (n)
                  const T* b,   // (n)
                  int64_t n, Stream stream);

}  // namespace lolcats::cuda
