// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, fp32 state, bias correction.
// One step over n parameters, in PyTorch's order of operations (torch.optim.AdamW):
//   p  = p * (1 - lr * weight_decay)               decay acts on the weights, not on the gradient
//   m  = beta1 m + (1 - beta1) g
//   v  = beta2 v + (1 - beta2) g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)      t = 1, 2, ...
// The moments (m, v) are fp32. The optimiser below keeps every parameter, gradient and moment in
// one arena per category, so a step is one flat loop (adamw_step) over all of them at once.
#pragma once
#include <cstdint>
#include <vector>

#include <memory>
#include <string>

#include "autograd/tape.h"
#include "tensor/arena.h"

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
// params_bf16 (cuda only): receives the updated parameters rounded to bf16.
void adamw_step(Tensor& params, Tensor& m, Tensor& v, const Tensor& grads, int64_t step, float lr,
                const AdamWConfig& cfg, Tensor* params_bf16 = nullptr);

// Optimiser over a list of parameter Vars. It takes charge of their memory, one arena per
// category (tensor/arena.h): the values move into "parameters", their gradients arrive in
// "gradients" (each Var's grad_slot), the moments live in "adam_m" and "adam_v". So zero_grad() is
// one memset and step() one flat update over all parameters at once (one loop, or one CUDA kernel;
// alignment padding between tensors stays 0 under it). As in PyTorch, a parameter that backward
// did not reach since zero_grad() has no gradient and is skipped (then the step goes parameter by
// parameter). Mixed precision: bf16 parameters on the cuda device get f32 master copies in the
// "parameters" arena; the update writes the masters and, in the same pass, the bf16 values the
// forward reads (their gradients are f32, as every trainable leaf's).
class AdamW {
 public:
  AdamW(std::vector<Var> params, AdamWConfig cfg);
  // "parameters 0.51 MiB, gradients 0.51 MiB, adam_m 0.51 MiB, adam_v 0.51 MiB (cpu)"
  std::string memory_report() const;
  void step();               // uses the current lr
  void zero_grad();
  void set_lr(float lr) { cfg_.lr = lr; }
  float lr() const { return cfg_.lr; }
  int64_t steps() const { return t_; }
  // Moments and f32 master values, for checkpoints: of parameter i.
  Tensor& master(size_t i) { return masters_[i]; }
  Tensor& m(size_t i) { return m_[i]; }
  Tensor& v(size_t i) { return v_[i]; }
  void set_steps(int64_t t) { t_ = t; }
  // After the masters were written from outside (a checkpoint, the best parameters): the bf16
  // working copies the forward reads are rounded from them again (nothing to do for f32 ones).
  void refresh_working();

 private:
  std::vector<Var> params_;
  std::unique_ptr<Arena> values_, grads_, m_arena_, v_arena_;
  Tensor working_;                      // bf16 working copies (bf16 parameters only)
  std::vector<Tensor> masters_, m_, v_;  // views into the arenas, per parameter
  AdamWConfig cfg_;
  int64_t t_ = 0;
};

}  // namespace lolcats
