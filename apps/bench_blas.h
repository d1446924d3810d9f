// `./bench matmul --blas LIB.so`: a BLAS library's cblas_sgemm as one more side of the matmul bench,
// loaded at run time (dlopen), so that no BLAS becomes a dependency of the build. It is how the
// question "would a packaged BLAS beat Eigen's GEMM here?" is answered on a given host, with the
// same interleaved medians as the PyTorch comparison (README, "GEMM backends"):
//   ./bench matmul --blas /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0
//   ./bench matmul --blas /usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4
// The library's threads are set to --threads through its own call (openblas_set_num_threads,
// bli_thread_set_num_threads) when it has one.
#pragma once
#include <cstdint>
#include <dlfcn.h>
#include <string>

#include "tensor/check.h"

class BlasLibrary {
 public:
  explicit BlasLibrary(const std::string& path, int threads) : path_(path) {
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    ENSURE(handle_, "--blas %s: %s", path.c_str(), dlerror());
    sgemm_ = reinterpret_cast<Sgemm>(dlsym(handle_, "cblas_sgemm"));
    ENSURE(sgemm_, "--blas %s: the library has no cblas_sgemm (give a CBLAS library: OpenBLAS, BLIS, ...)",
           path.c_str());
    if (auto set = reinterpret_cast<void (*)(int)>(dlsym(handle_, "openblas_set_num_threads"))) set(threads);
    if (auto set = reinterpret_cast<void (*)(int64_t)>(dlsym(handle_, "bli_thread_set_num_threads"))) set(threads);
  }
  ~BlasLibrary() {
    if (handle_) dlclose(handle_);
  }
  BlasLibrary(const BlasLibrary&) = delete;
  BlasLibrary& operator=(const BlasLibrary&) = delete;

  // y (M, N) = x (M, K) @ w (N, K)^T, row-major f32: the linear layer's product, as ours computes it.
  void linear(float* y, const float* x, const float* w, int M, int N, int K) const {
    enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };  // the CBLAS enum values
    sgemm_(kRowMajor, kNoTrans, kTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
  }
  const std::string& path() const { return path_; }

 private:
  using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                         int);
  std::string path_;
  void* handle_ = nullptr;
  Sgemm sgemm_ = nullptr;
};
