// Device memory for Tensor (tensor/tensor.h declares these hooks; tensor/no_cuda.cpp is the
// CPU-only build's version).
#include "cuda/common.cuh"
#include "cuda/elementwise.h"
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
void device_copy(void* dst, const void* src, size_t bytes) {
  cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

void device_convert(void* dst, DType dt, const void* src, DType st, int64_t n) {
  if (dt == st) {
    device_copy(dst, src, size_t(n) * dtype_size(dt));
  } else if (st == DType::f32 && dt == DType::bf16) {
    cuda::cast_f32_to_bf16(static_cast<bf16*>(dst), static_cast<const float*>(src), n, nullptr);
  } else if (st == DType::bf16 && dt == DType::f32) {
    cuda::cast_bf16_to_f32(static_cast<float*>(dst), static_cast<const bf16*>(src), n, nullptr);
  } else {
    fail(__FILE__, __LINE__, strfmt("no conversion from %s to %s", dtype_name(st), dtype_name(dt)));
  }
}

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace lolcats
