// The kernels and the launch sequence of tests/test_cuda_streams.cpp. The same file compiles with
// nvcc; on a GPU only the disciplined free runs (the naive one would race there for real).
#include "cuda/common.cuh"
#include "tests/stream_kernels.h"

namespace {

__global__ void fill_ramp(float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 1.0f + float(i);
}

__global__ void copy(float* out, const float* in, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i];
}

}  // namespace

namespace stream_test {

ScratchReuse run_scratch_reuse(int n, bool naive_free) {
  ScratchReuse r;
  cudaStream_t s = nullptr;
  // Non-blocking: work on the legacy stream (the overwrite below) does not wait for it.
  cudaCheck(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const size_t bytes = sizeof(float) * size_t(n);
  float* out = static_cast<float*>(lolcats::device_malloc(bytes));
  const int threads = 128, blocks = ceil_div(n, threads);
  {
    DeviceScratch<float> tmp(size_t(n), s);
    r.scratch = tmp.p;
    launch_kernel(fill_ramp, blocks, threads, 0, s, tmp.p, n);
    cudaCheck(cudaStreamSynchronize(s));  // the scratch holds the ramp
    launch_kernel(copy, blocks, threads, 0, s, out, tmp.p, n);  // queued: reads the scratch later
    if (naive_free) {  // the old rule: the block is free at once, whatever is queued
      lolcats::device_free(tmp.p);
      tmp.p = nullptr;
    }
  }  // DeviceScratch: freed on s
  r.in_flight = cudaStreamQuery(s) == cudaErrorNotReady;
  float* next = static_cast<float*>(lolcats::device_malloc(bytes));
  r.next = next;
  cudaCheck(cudaMemset(next, 0, bytes));  // its new owner writes it, on the legacy stream
  cudaCheck(cudaStreamSynchronize(s));
  float* again = static_cast<float*>(lolcats::device_malloc(bytes));
  r.after_sync = again;
  r.out.resize(size_t(n));
  cudaCheck(cudaMemcpy(r.out.data(), out, bytes, cudaMemcpyDeviceToHost));
  lolcats::device_free(again);
  lolcats::device_free(next);
  lolcats::device_free(out);
  cudaCheck(cudaStreamDestroy(s));
  return r;
}

}  // namespace stream_test
