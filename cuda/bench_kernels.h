// Device-side pieces of `./bench gpu-ops` (apps/bench_gpu.h): buffers of random values, timing with
// CUDA events, and the list of kernels to time with their sizes and minimum bytes or FLOPs.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/api.h"

namespace lolcats::cuda::bench {

std::string device_summary();  // "NVIDIA H200, 132 SMs, 139.8 GiB, sm_90"

// Device memory holding uniform random values in [-1, 1) (f32 or bf16, by `bf16_elements`).
class Buffer {
 public:
  explicit Buffer(size_t bytes, bool bf16_elements = true, unsigned seed = 1);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return p_; }
  size_t bytes() const { return bytes_; }
  template <typename T> T* as() const { return static_cast<T*>(p_); }
 private:
  void* p_ = nullptr;
  size_t bytes_;
};

void copy(Buffer& dst, const Buffer& src);                 // device-to-device memcpy
// n values at p (device; bf16 or f32) = shift + scale * uniform [-1, 1) (random weights for benches).
void fill_uniform(void* p, size_t n, bool bf16_elements, unsigned seed, float scale, float shift = 0.0f);
double time_once(const std::function<void()>& fn);       // seconds, by CUDA events

// y (M, N) bf16 = x (M, K) bf16 @ W (N, K)^T, or x @ W (K, N) when !trans_w... (square ceilings).
struct GemmOperands {
  GemmOperands(int M, int N, int K, bool square_ceiling);
  void run();
  int M, N, K;
  bool trans_w;
  std::unique_ptr<Buffer> x, w, y;
};

struct KernelCase {
  std::string name, shape;
  double bytes = 0;  // minimum bytes moved (memory-bound kernels)
  double flop = 0;   // FLOPs (compute-bound kernels); when > 0 the case is reported in TFLOP/s
  std::function<void()> run;
  std::shared_ptr<void> state;  // keeps the case's buffers alive
};
std::vector<KernelCase> kernel_cases(bool smoke);

}  // namespace lolcats::cuda::bench
