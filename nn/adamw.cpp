#include "nn/adamw.h"

#include <cmath>

namespace lolcats {

void adamw_step(float* params, float* m, float* v, const float* grads, int64_t n, int64_t step,
                float lr, const AdamWConfig& cfg) {
  ENSURE(step >= 1, "adamw_step: step counts from 1, got %lld", (long long)step);
  const float decay = 1.0f - lr * cfg.weight_decay;
  const float bc1 = 1.0f - std::pow(cfg.beta1, float(step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(cfg.beta2, float(step)));
  const float step_size = lr / bc1;
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; i++) {
    float g = grads[i];
    params[i] *= decay;
    m[i] = cfg.beta1 * m[i] + (1.0f - cfg.beta1) * g;
    v[i] = cfg.beta2 * v[i] + (1.0f - cfg.beta2) * g * g;
    params[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + cfg.eps);
  }
}

AdamW::AdamW(std::vector<Var> params, AdamWConfig cfg) : params_(std::move(params)), cfg_(cfg) {
  for (const Var& p : params_) {
    ENSURE(p->is_leaf && p->requires_grad, "AdamW: every parameter must be a trainable leaf");
    m_.push_back(Tensor::zeros(p->value.shape()));
    v_.push_back(Tensor::zeros(p->value.shape()));
  }
}

void AdamW::step() {
  t_++;
  for (size_t i = 0; i < params_.size(); i++) {
    const Var& p = params_[i];
    if (!p->grad.defined()) continue;
    adamw_step(p->value.f32(), m_[i].f32(), v_[i].f32(), p->grad.f32(), p->value.numel(), t_,
               cfg_.lr, cfg_);
  }
}

void AdamW::zero_grad() {
  for (const Var& p : params_) lolcats::zero_grad(p);
}

}  // namespace lolcats
