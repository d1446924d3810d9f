// ./bench gpu-ops: the cuda device's kernels against the machine's own ceilings.
//
// First the ceilings, measured here: device-to-device copy bandwidth (bytes read + written) and
// the bf16 GEMM rate of cuBLASLt at 8192^3. Then every kernel, timed with CUDA events (warm-up,
// median of the timed repetitions), its minimum bytes or FLOPs counted by hand, and the fraction of
// the relevant ceiling it reaches. Then cuBLASLt on the linear layers of Llama 3 8B at T = 1024.
// Inputs are random (never zeros: some units are faster on zeros) and larger than the 60 MB L2.
// Under the SIMT emulator the same code runs at toy sizes (--smoke), as a check that it works.
#pragma once
#include <algorithm>
#include <functional>
#include <random>

#include "cuda/api.h"
#include "cuda/bench_kernels.h"

namespace {

struct GpuBench {
  bool smoke;
  double copy_gbs = 0, gemm_tflops = 0;

  // Median seconds of `reps` runs of fn after `warm` runs.
  double median_seconds(const std::function<void()>& fn, int reps = 20, int warm = 3) {
    if (smoke) reps = 2, warm = 1;
    std::vector<double> t;
    for (int i = 0; i < warm; i++) fn();
    for (int i = 0; i < reps; i++) t.push_back(cuda::bench::time_once(fn));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

  void emit(json j) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }

  // A memory-bound kernel: bytes it must move at least, and the share of the copy ceiling.
  void bandwidth(const std::string& name, const std::string& shape, double bytes, const std::function<void()>& fn) {
    double s = median_seconds(fn);
    json j = {{"bench", "gpu-ops"}, {"kernel", name}, {"shape", shape}, {"seconds", s},
              {"gb_per_s", bytes / s / 1e9}, {"bytes", bytes}};
    if (copy_gbs > 0) j["fraction_of_copy"] = bytes / s / 1e9 / copy_gbs;
    emit(j);
  }
  // A compute-bound kernel: FLOPs and the share of the GEMM ceiling.
  void flops(const std::string& name, const std::string& shape, double flop, const std::function<void()>& fn) {
    double s = median_seconds(fn);
    json j = {{"bench", "gpu-ops"}, {"kernel", name}, {"shape", shape}, {"seconds", s},
              {"tflop_per_s", flop / s / 1e12}, {"flop", flop}};
    if (gemm_tflops > 0) j["fraction_of_gemm"] = flop / s / 1e12 / gemm_tflops;
    emit(j);
  }
};

int bench_gpu_ops(bool smoke) {
  namespace cb = cuda::bench;
  GpuBench b{smoke};
  b.emit({{"bench", "gpu-ops"}, {"device", cb::device_summary()}});

  // ---- ceilings ----
  {
    size_t bytes = smoke ? (1u << 20) : (size_t(2) << 30);  // 2 GiB each way
    cb::Buffer src(bytes), dst(bytes);
    double s = b.median_seconds([&] { cb::copy(dst, src); });
    b.copy_gbs = 2.0 * bytes / s / 1e9;
    b.emit({{"bench", "gpu-ops"}, {"ceiling", "copy"}, {"bytes_each_way", bytes}, {"seconds", s},
            {"gb_per_s", b.copy_gbs}, {"counts", "bytes read + bytes written"}});
    int n = smoke ? 64 : 8192;
    cb::GemmOperands g(n, n, n, true);
    double sg = b.median_seconds([&] { g.run(); });
    b.gemm_tflops = 2.0 * n * n * n / sg / 1e12;
    b.emit({{"bench", "gpu-ops"}, {"ceiling", "gemm bf16 (cuBLASLt)"}, {"shape", std::to_string(n) + "^3"},
            {"seconds", sg}, {"tflop_per_s", b.gemm_tflops}});
  }

  // ---- cuBLASLt on Llama 3 8B's linear layers, T = 1024: y (T, N) = x (T, K) @ W (N, K)^T ----
  const int T = smoke ? 16 : 1024;
  const std::pair<int, int> kn[] = {{4096, 4096}, {4096, 1024}, {4096, 14336}, {14336, 4096}, {4096, 128256}};
  for (auto [K, N] : kn) {
    int k = smoke ? K / 256 : K, n = smoke ? N / 256 : N;
    cb::GemmOperands g(T, n, k, false);
    b.flops("gemm bf16 x @ W^T", std::to_string(T) + "x" + std::to_string(k) + " @ " + std::to_string(n) + "x" + std::to_string(k) + "^T",
            2.0 * T * n * k, [&] { g.run(); });
  }

  // ---- the kernels ----
  for (const cb::KernelCase& c : cb::kernel_cases(smoke)) {
    if (c.flop > 0) b.flops(c.name, c.shape, c.flop, c.run);
    else b.bandwidth(c.name, c.shape, c.bytes, c.run);
  }
  return 0;
}

}  // namespace
