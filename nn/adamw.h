// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, fp32 state, bias correction.
// One step over n parameters, in PyTorch's order of operations (torch.optim.AdamW):
//   p  = p * (1 - lr * weight_decay)               decay acts on the weights, not on the gradient
//   m  = beta1 m + (1 - beta1) g
//   v  = beta2 v + (1 - beta2) g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)      t = 1, 2, ...
// Each parameter tensor has its own fp32 moment buffers (m, v) and is updated by one flat loop
// (adamw_step) over its contiguous values.
#pragma once
#include <cstdint>
#include <vector>

#include "autograd/tape.h"

namespace lolcats {

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
};

// params (n), grads (n), m (n), v (n); step is the 1-based number of this update.
void adamw_step(float* params, float* m, float* v, const float* grads, int64_t n, int64_t step,
                float lr, const AdamWConfig& cfg);
// Tensor-level (tensor/device.h): all four f32 of one shape, on the CPU or the cuda device
// (cuda/adamw.h, the same update in the same order of operations).
void adamw_step(Tensor& params, Tensor& m, Tensor& v, const Tensor& grads, int64_t step, float lr,
                const AdamWConfig& cfg);

// Optimiser over a list of parameter Vars (each with its own moment buffers). Parameters whose
// gradient was never created (not reached by backward) are skipped, as in PyTorch.
class AdamW {
 public:
  AdamW(std::vector<Var> params, AdamWConfig cfg);
  void step();               // uses the current lr
  void zero_grad();
  void set_lr(float lr) { cfg_.lr = lr; }
  float lr() const { return cfg_.lr; }
  int64_t steps() const { return t_; }
  // Moments, for checkpoints: m and v of parameter i.
  Tensor& m(size_t i) { return m_[i]; }
  Tensor& v(size_t i) { return v_[i]; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  std::vector<Var> params_;
  std::vector<Tensor> m_, v_;
  AdamWConfig cfg_;
  int64_t t_ = 0;
};

}  // namespace lolcats
