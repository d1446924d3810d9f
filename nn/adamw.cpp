#include "nn/adamw.h"

#include <cmath>

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/adamw.h"
#endif

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

void adamw_step(Tensor& params, Tensor& m, Tensor& v, const Tensor& grads, int64_t step, float lr,
                const AdamWConfig& cfg) {
  for (const Tensor* t : {static_cast<const Tensor*>(&m), static_cast<const Tensor*>(&v), &grads})
    check_shape(*t, params.shape(), "AdamW state");
  if (check_operands("adamw", {&params, &m, &v, &grads}))
    return adamw_step(params.f32(), m.f32(), v.f32(), grads.f32(), params.numel(), step, lr, cfg);
#ifdef LOLCATS_CUDA
  ENSURE(params.dtype() == DType::f32, "adamw: parameters are updated in f32");
  cuda::adamw_step(params.dev<float>(), m.dev<float>(), v.dev<float>(), grads.dev<float>(), params.numel(), step,
                   lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, nullptr, nullptr);
#else
  ON_CUDA(params.dtype(), T, (void)0);
#endif
}

AdamW::AdamW(std::vector<Var> params, AdamWConfig cfg) : params_(std::move(params)), cfg_(cfg) {
  for (const Var& p : params_) {
    ENSURE(p->is_leaf && p->requires_grad, "AdamW: every parameter must be a trainable leaf");
    ENSURE(p->value.dtype() == DType::f32, "AdamW: parameters are updated in f32 (a %s parameter needs an "
           "f32 master copy)", dtype_name(p->value.dtype()));
    m_.push_back(Tensor::zeros(p->value.shape(), DType::f32, p->value.device()));
    v_.push_back(Tensor::zeros(p->value.shape(), DType::f32, p->value.device()));
  }
}

void AdamW::step() {
  t_++;
  for (size_t i = 0; i < params_.size(); i++) {
    const Var& p = params_[i];
    if (!p->grad.defined()) continue;
    adamw_step(p->value, m_[i], v_[i], p->grad, t_, cfg_.lr, cfg_);
  }
}

void AdamW::zero_grad() {
  for (const Var& p : params_) lolcats::zero_grad(p);
}

}  // namespace lolcats
