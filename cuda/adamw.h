// AdamW on the GPU: the CUDA twin of adamw_step in nn/adamw.h (the update, its order of operations
// and PyTorch's equivalent are described there), one flat kernel over the parameter arena:
//
//   p  = p * (1 - lr * weight_decay)
//   m  = beta1 m + (1 - beta1) g
//   v  = beta2 v + (1 - beta2) g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)          t = step = 1, 2, ...
//
// The scalar factors are computed on the host by the same expressions as the CPU twin and each
// element by the same sequence of f32 operations (IEEE sqrt and division), so an f32 step matches
// the CPU's to a few ulp (the compilers may fuse different multiply-adds). Everything is f32
// (master parameters, moments, gradients); params_bf16, when given, receives the updated
// parameters rounded to bf16 for the next forward.
#pragma once
#include <cstdint>

#include "cuda/api.h"

namespace lolcats::cuda {

void adamw_step(float* params,        // (n), updated in place
                float* m,             // (n), first moment, updated in place
                float* v,             // (n), second moment, updated in place
                const float* grads,   // (n)
                int64_t n, int64_t step, float lr, float beta1, float beta2, float eps,
                float weight_decay,
                bf16* params_bf16,    // (n), written; may be null
                Stream stream);

}  // namespace lolcats::cuda
