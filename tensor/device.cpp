#include "tensor/device.h"

#include <string>

namespace lolcats {

bool check_devices(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) first = t;
    ENSURE(t->device() == first->device(), "%s: operands on different devices (%s and %s)", op,
           first->str().c_str(), t->str().c_str());
  }
  ENSURE(first, "%s: no operands", op);
  return first->device() == Device::cpu;
}

bool check_operands(const char* op, std::initializer_list<const Tensor*> ts) {
  bool cpu = check_devices(op, ts);
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) first = t;
    ENSURE(t->dtype() == first->dtype(), "%s: operands of different dtypes (%s and %s)", op,
           first->str().c_str(), t->str().c_str());
  }
  DType dt = first->dtype();
  ENSURE(cpu ? dt == DType::f32 : (dt == DType::f32 || dt == DType::bf16),
         "%s: the %s kernels take %s, not %s", op, cpu ? "cpu" : "cuda", cpu ? "f32" : "f32 or bf16",
         dtype_name(dt));
  return cpu;
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  ENSURE(a.shape() == b.shape(), "%s: shapes differ: %s vs %s", op, a.shape().str().c_str(),
         b.shape().str().c_str());
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") {
    ENSURE(cuda_available(), "--device cuda: this build has no CUDA (rebuild with CUDA=nvcc or CUDA=emu)");
    return Device::cuda;
  }
  ENSURE(name == "auto", "--device must be cpu, cuda or auto, not \"%s\"", name.c_str());
  return gpu_visible() ? Device::cuda : Device::cpu;
}

}  // namespace lolcats
