// Device memory for Tensor (tensor/tensor.h declares these hooks; tensor/no_cuda.cpp is the
// CPU-only build's version).
#include "cuda/common.cuh"
#include "tensor/tensor.h"

namespace lolcats {

void* device_malloc(size_t bytes) {
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes > 0 ? bytes : 1);
  if (err == cudaErrorMemoryAllocation) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail(__FILE__, __LINE__,
         strfmt("GPU out of memory: %.1f MiB requested, %.1f MiB free of %.1f MiB; reduce the batch "
                "or sequence length", bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0));
  }
  cudaCheck(err);
  return p;
}

void device_free(void* p) {
  if (p) cudaFree(p);  // no check: called from destructors, possibly during error unwinding
}

void device_memset_zero(void* p, size_t bytes) { cudaCheck(cudaMemset(p, 0, bytes)); }

void device_upload(void* dst, const void* src, size_t bytes) {
  cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void device_download(void* dst, const void* src, size_t bytes) {
  cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace lolcats
