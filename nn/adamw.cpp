#include "nn/adamw.h"
#include "tensor/op_profile.h"

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
                const AdamWConfig& cfg, Tensor* params_bf16) {
  for (const Tensor* t : {static_cast<const Tensor*>(&m), static_cast<const Tensor*>(&v), &grads})
    check_shape(*t, params.shape(), "AdamW state");
  if (params_bf16) check_shape(*params_bf16, params.shape(), "AdamW bf16 working copy", DType::bf16);
  bool cpu = check_operands("adamw", {&params, &m, &v, &grads});
  check_devices("adamw", {&params, params_bf16});
  if (cpu) {
    ENSURE(!params_bf16, "adamw: bf16 working copies are for the cuda device");
    return adamw_step(params.f32(), m.f32(), v.f32(), grads.f32(), params.numel(), step, lr, cfg);
  }
#ifdef LOLCATS_CUDA
  ENSURE(params.dtype() == DType::f32, "adamw: parameters are updated in f32");
  // Reads parameters, moments and gradients; writes parameters and moments (and the bf16 copy).
  OpTimer timer(OpKind::optimizer, 12.0 * params.numel(), 7.0 * params.nbytes() + op_bytes({params_bf16}));
  cuda::adamw_step(params.dev<float>(), m.dev<float>(), v.dev<float>(), grads.dev<float>(), params.numel(), step,
                   lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay,
                   params_bf16 ? params_bf16->dev<cuda::bf16>() : nullptr, nullptr);
#else
  ON_CUDA(params.dtype(), T, (void)0);
#endif
}

AdamW::AdamW(std::vector<Var> params, AdamWConfig cfg) : params_(std::move(params)), cfg_(cfg) {
  ENSURE(!params_.empty(), "AdamW: no parameters to train");
  const Device device = params_[0]->value.device();
  const DType dtype = params_[0]->value.dtype();
  std::vector<Shape> shapes;
  for (const Var& p : params_) {
    ENSURE(p->is_leaf && p->requires_grad, "AdamW: every parameter must be a trainable leaf");
    ENSURE(p->value.device() == device && p->value.dtype() == dtype,
           "AdamW: the parameters differ in device or dtype (%s vs %s)", params_[0]->value.str().c_str(),
           p->value.str().c_str());
    shapes.push_back(p->value.shape());
  }
  ENSURE(dtype == DType::f32 || (dtype == DType::bf16 && device == Device::cuda),
         "AdamW: parameters are f32, or bf16 on the cuda device (with f32 master copies); got %s on %s",
         dtype_name(dtype), device_name(device));
  const size_t bytes = Arena::bytes_for(shapes);
  auto arena = [&](const char* name) {
    auto a = std::make_unique<Arena>(name, bytes, DType::f32, device);
    a->zero_();  // the padding between tensors too: the flat update keeps it at 0
    return a;
  };
  values_ = arena("parameters");
  grads_ = arena("gradients");
  m_arena_ = arena("adam_m");
  v_arena_ = arena("adam_v");
  // bf16 parameters (mixed precision on the GPU): the forward reads a bf16 working copy, laid out
  // element for element like the f32 masters so that the update writes both in one pass.
  if (dtype == DType::bf16) working_ = Tensor::zeros({int64_t(bytes / 4)}, DType::bf16, device);
  const char* base = static_cast<const char*>(values_->flat().data());
  for (const Var& p : params_) {
    Tensor master = values_->alloc(p->value.shape());
    master.copy_from(p->value.to(device, DType::f32), "parameter");
    if (working_.defined()) {
      int64_t offset = (static_cast<const char*>(master.data()) - base) / 4;
      Tensor work = working_.view(offset, p->value.shape());
      work.copy_from(p->value, "parameter");
      p->value = work;
    } else {
      p->value = master;
    }
    masters_.push_back(master);
    p->grad_slot = grads_->alloc(p->value.shape());  // gradients arrive there (autograd/tape.cpp)
    if (p->grad.defined()) p->grad_slot.copy_from(p->grad, "gradient");  // keep what was accumulated
    p->grad = p->grad.defined() ? p->grad_slot : Tensor();
    m_.push_back(m_arena_->alloc(p->value.shape()));
    v_.push_back(v_arena_->alloc(p->value.shape()));
  }
}

std::string AdamW::memory_report() const {
  std::string s = strfmt("%s %.2f MiB, %s %.2f MiB, %s %.2f MiB, %s %.2f MiB", values_->name().c_str(),
                         values_->used() / 1048576.0, grads_->name().c_str(), grads_->used() / 1048576.0,
                         m_arena_->name().c_str(), m_arena_->used() / 1048576.0, v_arena_->name().c_str(),
                         v_arena_->used() / 1048576.0);
  if (working_.defined()) s += strfmt(", bf16 working copy %.2f MiB", working_.nbytes() / 1048576.0);
  return s + " (" + device_name(params_[0]->value.device()) + ")";
}

void AdamW::step() {
  t_++;
  bool all = true;
  for (const Var& p : params_) {
    if (!p->grad.defined()) {
      all = false;
      continue;
    }
    if (p->grad.data() != p->grad_slot.data()) {  // a gradient set from outside: into the arena
      p->grad_slot.copy_from(p->grad, "gradient");
      p->grad = p->grad_slot;
    }
  }
  if (all) {  // the usual case: one update over the whole arena
    Tensor p = values_->flat(), g = grads_->flat(), m = m_arena_->flat(), v = v_arena_->flat();
    Tensor w = working_.defined() ? working_.view(0, p.shape()) : Tensor();
    adamw_step(p, m, v, g, t_, cfg_.lr, cfg_, working_.defined() ? &w : nullptr);
    return;
  }
  for (size_t i = 0; i < params_.size(); i++)  // skip parameters without a gradient, as PyTorch
    if (params_[i]->grad.defined())
      adamw_step(masters_[i], m_[i], v_[i], params_[i]->grad, t_, cfg_.lr, cfg_,
                 working_.defined() ? &params_[i]->value : nullptr);
}

void AdamW::refresh_working() {
  if (!working_.defined()) return;
  for (size_t i = 0; i < params_.size(); i++)
    params_[i]->value.copy_from(masters_[i].to(masters_[i].device(), DType::bf16), "parameter");
}

// The whole gradients arena in one memset; each parameter is then "without gradient" until
// backward reaches it again (PyTorch's zero_grad(set_to_none=True)).
void AdamW::zero_grad() {
  grads_->zero_();
  for (const Var& p : params_) p->grad = Tensor();
}

}  // namespace lolcats
