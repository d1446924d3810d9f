// The AdamW kernel, then its launcher (math in cuda/adamw.h and nn/adamw.h).
//
// One grid-stride loop over the flat arena: each thread reads g, p, m, v of its elements once and
// writes p, m, v (and the bf16 copy) once: a purely bandwidth-bound kernel, 16 bytes read and 12
// (+2) written per parameter, all coalesced.
#include "cuda/adamw.h"

#include <cmath>

#include "cuda/common.cuh"

namespace lolcats::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 2048;  // ~16 blocks of 256 threads per H100 SM; beyond that, loop

// The per-element update, in nn/adamw.cpp's order of operations.
__global__ void adamw_kernel(float* params, float* m, float* v, const float* grads, int64_t n,
                             float beta1, float beta2, float eps, float decay, float step_size,
                             float bc2_sqrt, bf16* params_bf16) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grads[i];
    float p = params[i] * decay;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    p -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    params[i] = p;
    m[i] = mi;
    v[i] = vi;
    if (params_bf16) params_bf16[i] = from_f32<bf16>(p);
  }
}

}  // namespace

void adamw_step(float* params, float* m, float* v, const float* grads, int64_t n, int64_t step,
                float lr, float beta1, float beta2, float eps, float weight_decay,
                bf16* params_bf16, Stream stream) {
  ENSURE(step >= 1, "adamw_step: step counts from 1, got %lld", (long long)step);
  ENSURE(n >= 0, "adamw_step: bad size n=%lld", (long long)n);
  if (n == 0) return;
  // The scalar factors, computed exactly as nn/adamw.cpp computes them (f32 pow and sqrt).
  const float decay = 1.0f - lr * weight_decay;
  const float bc1 = 1.0f - std::pow(beta1, float(step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(beta2, float(step)));
  const float step_size = lr / bc1;
  const int64_t needed = (n + kThreads - 1) / kThreads;
  const int blocks = int(needed < kMaxBlocks ? needed : kMaxBlocks);
  launch_kernel(adamw_kernel, blocks, kThreads, 0, stream, params, m, v, grads, n, beta1, beta2,
                eps, decay, step_size, bc2_sqrt, params_bf16);
}

}  // namespace lolcats::cuda
