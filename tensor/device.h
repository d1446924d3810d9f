// The seam between the op layer and the kernels. Each op's file (tensor/rmsnorm.cpp, ...) has one
// Tensor-level entry point per kernel: it checks shapes, dtypes and devices once, then calls the
// CPU kernel (f32) or the CUDA twin of the same name (cuda/<op>.h; f32 or bf16 storage):
//
//   void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
//     ...checks...
//     if (on_cpu(x)) return rmsnorm_forward(y.f32(), rstd.f32(), x.f32(), w.f32(), N, C, eps);
//     ON_CUDA(x.dtype(), T, cuda::rmsnorm_forward(y.dev<T>(), rstd.dev<float>(), x.dev<T>(), ...));
//   }
//
// Code above this layer (autograd, nn, lolcats) handles Tensors only, never raw pointers.
#pragma once
#include <initializer_list>

#include "tensor/tensor.h"

namespace lolcats {

// Every defined tensor of `ts` lives on one device and has one of the dtypes that device's kernels
// take (cpu: f32; cuda: f32 or bf16), `ts` all of the first one's dtype. Returns whether on the CPU.
bool check_operands(const char* op, std::initializer_list<const Tensor*> ts);
// The same for tensors that may differ in dtype (e.g. f32 statistics beside bf16 activations).
bool check_devices(const char* op, std::initializer_list<const Tensor*> ts);
// ENSURE shape equality with a message naming the op and both shapes.
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);

// The apps' --device flag: "cpu", "cuda", or "auto" (cuda when a real GPU is visible; the SIMT
// emulator's cuda device is never chosen by itself: it is for tests, and slow).
Device parse_device(const std::string& name);
bool gpu_visible();  // a build for real GPUs (CUDA=nvcc) that sees one
// The cuda device's name and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)", for messages.
std::string device_card_name();

}  // namespace lolcats

// ON_CUDA(dtype, T, statement): runs `statement` with T the cuda storage type of `dtype` (float or
// cuda::bf16); in a build without CUDA, fails with one clear line.
#ifdef LOLCATS_CUDA
#define ON_CUDA(dtype, T, ...)                                                          \
  do {                                                                                  \
    if ((dtype) == ::lolcats::DType::f32) {                                             \
      using T = float;                                                                  \
      __VA_ARGS__;                                                                      \
    } else if ((dtype) == ::lolcats::DType::bf16) {                                     \
      using T = ::lolcats::cuda::bf16;                                                  \
      __VA_ARGS__;                                                                      \
    } else {                                                                            \
      ENSURE(false, "cuda kernels take f32 or bf16, not %s", ::lolcats::dtype_name(dtype)); \
    }                                                                                   \
  } while (0)
#else
#define ON_CUDA(dtype, T, ...) \
  ENSURE(false, "this build has no CUDA (rebuild with CUDA=emu or CUDA=nvcc)")
#endif
