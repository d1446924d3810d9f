// The LM head's fused, vocabulary-chunked cross-entropy: kernels, then launchers. The math is in
// cuda/cross_entropy.h.
#include <cfloat>

#include "cuda/common.cuh"
#include "cuda/cross_entropy.h"
#include "cuda/gemm.h"

namespace lolcats::cuda {

namespace {

constexpr int kRowThreads = 256;   // one block per row of a chunk
constexpr int kFinishThreads = 1024;

// Block-wide reduction of one f32 per thread (max or sum); every thread gets the result.
// Deterministic: a fixed tree over shared memory.
template <bool kMax>
__device__ float block_reduce(float v, float* shared /* (blockDim.x) */) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      float o = shared[threadIdx.x + stride];
      shared[threadIdx.x] = kMax ? fmaxf(shared[threadIdx.x], o) : shared[threadIdx.x] + o;
    }
    __syncthreads();
  }
  float r = shared[0];
  __syncthreads();  // shared is reused by the caller's next reduction
  return r;
}

__global__ void ce_init(float* m, float* s, float* target_logit, int N) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n < N) {
    m[n] = -INFINITY;
    s[n] = 0.0f;
    target_logit[n] = 0.0f;
  }
}

// Folds one chunk of logits (N, Vc), vocabulary columns v0 .. v0+Vc-1, into the running max and
// sum of every row, and picks up the target's logit if it lies in this chunk. Grid: N blocks.
__global__ void ce_chunk_stats(float* m, float* s, float* target_logit,
                               const float* logits /* (N, Vc) */, const int32_t* targets /* (N) */,
                               int Vc, int v0) {
  __shared__ float red[kRowThreads];
  int n = blockIdx.x;
  const float* row = logits + size_t(n) * Vc;
  float local_max = -INFINITY;
  for (int v = threadIdx.x; v < Vc; v += blockDim.x) local_max = fmaxf(local_max, row[v]);
  float chunk_max = block_reduce<true>(local_max, red);
  float m_old = m[n], m_new = fmaxf(m_old, chunk_max);
  float local_sum = 0.0f;
  for (int v = threadIdx.x; v < Vc; v += blockDim.x) local_sum += expf(row[v] - m_new);
  float chunk_sum = block_reduce<false>(local_sum, red);
  if (threadIdx.x == 0) {
    // exp(-inf - m_new) = 0 handles the first chunk, where s is still 0.
    s[n] = s[n] * expf(m_old - m_new) + chunk_sum;
    m[n] = m_new;
    int t = targets[n];
    if (t >= v0 && t < v0 + Vc) target_logit[n] = row[t - v0];
  }
}

// lse, the number of counted rows, the mean loss; flags the first bad target and then makes the
// loss NaN, so that a bad target cannot pass unseen without the host waiting for a flag. One block.
__global__ void ce_finish(float* loss, int* count_out, int* bad_row, float* lse, const float* m,
                          const float* s, const float* target_logit, const int32_t* targets, int N,
                          int V, int ignore_index) {
  __shared__ float red[kFinishThreads];
  float sum = 0.0f, count = 0.0f;
  for (int n = threadIdx.x; n < N; n += blockDim.x) {
    float l = m[n] + logf(s[n]);
    lse[n] = l;
    int t = targets[n];
    if (t == ignore_index) continue;
    if (t < 0 || t >= V) {
      atomicCAS(bad_row, 0, n + 1);
      continue;
    }
    sum += l - target_logit[n];
    count += 1.0f;
  }
  float total = block_reduce<false>(sum, red);
  float counted = block_reduce<false>(count, red);  // exact: integers below 2^24
  // block_reduce's barriers make every thread's atomicCAS on bad_row visible to thread 0.
  if (threadIdx.x == 0) {
    *count_out = int(counted);
    *loss = *bad_row != 0 ? nanf("") : counted > 0.0f ? total / counted : 0.0f;
  }
}

__global__ void ce_count(int* count_out, const int32_t* targets, int N, int ignore_index) {
  __shared__ float red[kFinishThreads];
  float count = 0.0f;
  for (int n = threadIdx.x; n < N; n += blockDim.x) count += targets[n] != ignore_index ? 1.0f : 0.0f;
  float counted = block_reduce<false>(count, red);
  if (threadIdx.x == 0) *count_out = int(counted);
}

// dlogits for one chunk. Grid: N blocks.
template <typename T>
__global__ void ce_dlogits(T* dlogits /* (N, Vc) */, const float* logits /* (N, Vc) */,
                           const float* lse, const int32_t* targets, const int* count, float dloss,
                           int Vc, int v0, int ignore_index) {
  int n = blockIdx.x;
  int t = targets[n];
  float scale = (t == ignore_index || *count == 0) ? 0.0f : dloss / float(*count);
  float l = lse[n];
  for (int v = threadIdx.x; v < Vc; v += blockDim.x) {
    size_t i = size_t(n) * Vc + v;
    float p = expf(logits[i] - l);
    dlogits[i] = from_f32<T>(scale * (p - (v0 + v == t ? 1.0f : 0.0f)));
  }
}

template <typename T>
__global__ void cast_from_f32(T* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(x[i]);
}

// The workspace, carved into 256-byte aligned pieces.
struct Workspace {
  float* logits;   // (N, chunk)
  void* dlogits;   // (N, chunk) of T
  float* dx;       // (N, C)
  float *m, *s, *target_logit;  // (N)
  int* ints;       // [0] count, [1] bad row + 1
  size_t bytes;
  Workspace(void* base, int N, int C, int chunk) {
    char* p = static_cast<char*>(base);
    size_t off = 0;
    auto take = [&](size_t b) {
      char* r = p ? p + off : nullptr;
      off += (b + 255) / 256 * 256;
      return r;
    };
    logits = reinterpret_cast<float*>(take(size_t(N) * chunk * 4));
    dlogits = take(size_t(N) * chunk * 4);
    dx = reinterpret_cast<float*>(take(size_t(N) * C * 4));
    m = reinterpret_cast<float*>(take(size_t(N) * 4));
    s = reinterpret_cast<float*>(take(size_t(N) * 4));
    target_logit = reinterpret_cast<float*>(take(size_t(N) * 4));
    ints = reinterpret_cast<int*>(take(2 * sizeof(int)));
    bytes = off;
  }
};

void check_sizes(int N, int C, int V, int chunk) {
  ENSURE(N >= 1 && C >= 1 && V >= 1, "lm_head_cross_entropy: bad sizes N %d, C %d, V %d", N, C, V);
  ENSURE(chunk >= 1 && chunk <= V, "lm_head_cross_entropy: chunk %d not in 1..V (%d)", chunk, V);
}

}  // namespace

size_t lm_head_cross_entropy_workspace(int N, int C, int chunk) {
  return Workspace(nullptr, N, C, chunk).bytes;
}

int lm_head_chunk(int N, int V, size_t slice_bytes) {
  size_t c = slice_bytes / (size_t(N) * 4);
  c = c / 64 * 64;
  if (c < 64) c = 64;
  return int(c < size_t(V) ? c : size_t(V));
}

template <typename T>
void lm_head_cross_entropy_forward(float* loss, float* lse, const T* x, const T* w,
                                   const int32_t* targets, int N, int C, int V, int ignore_index,
                                   int chunk, void* workspace, Stream stream) {
  check_sizes(N, C, V, chunk);
  Workspace ws(workspace, N, C, chunk);
  cudaCheck(cudaMemsetAsync(ws.ints, 0, 2 * sizeof(int), stream));
  launch_kernel(ce_init, ceil_div(N, 256), 256, 0, stream, ws.m, ws.s, ws.target_logit, N);
  for (int v0 = 0; v0 < V; v0 += chunk) {
    int vc = V - v0 < chunk ? V - v0 : chunk;
    // logits (N, vc) = x (N, C) @ w[v0 : v0 + vc] (vc, C)^T
    gemm(ws.logits, x, w + size_t(v0) * C, GemmShape{1, N, vc, C, Transpose::b}, nullptr, stream);
    launch_kernel(ce_chunk_stats, N, kRowThreads, 0, stream, ws.m, ws.s, ws.target_logit,
                  ws.logits, targets, vc, v0);
  }
  launch_kernel(ce_finish, 1, kFinishThreads, 0, stream, loss, ws.ints, ws.ints + 1, lse, ws.m,
                ws.s, ws.target_logit, targets, N, V, ignore_index);
}

int lm_head_cross_entropy_bad_row(const void* workspace, int N, int C, int chunk, Stream stream) {
  Workspace ws(const_cast<void*>(workspace), N, C, chunk);
  int bad = 0;
  cudaCheck(cudaMemcpyAsync(&bad, ws.ints + 1, sizeof bad, cudaMemcpyDeviceToHost, stream));
  cudaCheck(cudaStreamSynchronize(stream));
  return bad - 1;
}

template <typename T>
void lm_head_cross_entropy_backward(T* dx, float* dw, float dloss, const T* x, const T* w,
                                    const float* lse, const int32_t* targets, int N, int C, int V,
                                    int ignore_index, int chunk, void* workspace, Stream stream) {
  check_sizes(N, C, V, chunk);
  Workspace ws(workspace, N, C, chunk);
  T* dlogits = static_cast<T*>(ws.dlogits);
  launch_kernel(ce_count, 1, kFinishThreads, 0, stream, ws.ints, targets, N, ignore_index);
  for (int v0 = 0; v0 < V; v0 += chunk) {
    int vc = V - v0 < chunk ? V - v0 : chunk;
    gemm(ws.logits, x, w + size_t(v0) * C, GemmShape{1, N, vc, C, Transpose::b}, nullptr, stream);
    auto* k = ce_dlogits<T>;
    launch_kernel(k, N, kRowThreads, 0, stream, dlogits, ws.logits, lse, targets, ws.ints, dloss,
                  vc, v0, ignore_index);
    // dx (N, C) [+]= dlogits (N, vc) @ w[v0 : v0 + vc] (vc, C), summed in f32 over the chunks
    gemm(ws.dx, dlogits, w + size_t(v0) * C, GemmShape{1, N, C, vc, Transpose::none, accumulate_if(v0 > 0)},
         nullptr, stream);
    // dw[v0 : v0 + vc] (vc, C) += dlogits^T (vc, N) @ x (N, C)
    if (dw) gemm(dw + size_t(v0) * C, dlogits, x, GemmShape{1, vc, C, N, Transpose::a, Accumulate::yes},
                 nullptr, stream);
  }
  auto* cast = cast_from_f32<T>;
  int64_t n = int64_t(N) * C;
  launch_kernel(cast, int(n < 1024 * 256 ? ceil_div(int(n), 256) : 1024), 256, 0, stream, dx, ws.dx, n);
}

template void lm_head_cross_entropy_forward<float>(float*, float*, const float*, const float*, const int32_t*, int, int, int, int, int, void*, Stream);
template void lm_head_cross_entropy_forward<bf16>(float*, float*, const bf16*, const bf16*, const int32_t*, int, int, int, int, int, void*, Stream);
template void lm_head_cross_entropy_backward<float>(float*, float*, float, const float*, const float*, const float*, const int32_t*, int, int, int, int, int, void*, Stream);
template void lm_head_cross_entropy_backward<bf16>(bf16*, float*, float, const bf16*, const bf16*, const float*, const int32_t*, int, int, int, int, int, void*, Stream);

}  // namespace lolcats::cuda
