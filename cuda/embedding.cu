// Embedding kernels, then their launchers (math and the index policy in cuda/embedding.h).
//
// forward:  one block per output row; its threads copy the row's C values (coalesced).
// backward: the launcher groups positions by token on the host (tokens (U), starts (U + 1),
//           positions (N): bucket u holds positions[starts[u] .. starts[u+1]) of token tokens[u], in
//           increasing order). One block per distinct token; a thread per channel adds that
//           token's dy rows onto dwte in position order. Each dwte value has one owner: no atomics.
#include "cuda/embedding.h"

#include <algorithm>
#include <vector>

#include "cuda/common.cuh"

namespace lolcats::cuda {
namespace {

constexpr int kMaxThreads = 256;

int threads_for(int C) {  // enough warps to cover a row once, at most kMaxThreads
  return C >= kMaxThreads ? kMaxThreads : ceil_div(C, 32) * 32;
}

template <typename T>
__global__ void embedding_forward_kernel(T* y, const int32_t* idx, const T* wte, int V, int C) {
  const int n = blockIdx.x, tok = idx[n];
  T* yr = y + int64_t(n) * C;
  if (tok < 0 || tok >= V) {  // unreachable after the launcher's check; never read out of wte
    for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = from_f32<T>(0.0f);
    return;
  }
  const T* wr = wte + int64_t(tok) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = wr[c];
}

template <typename T>
__global__ void embedding_backward_kernel(float* dwte, const T* dy, const int32_t* tokens,
                                          const int32_t* starts, const int32_t* positions, int C) {
  const int u = blockIdx.x, k0 = starts[u], k1 = starts[u + 1];
  float* row = dwte + int64_t(tokens[u]) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = row[c];
    for (int k = k0; k < k1; k++) acc += to_f32(dy[int64_t(positions[k]) * C + c]);
    row[c] = acc;
  }
}

// The indices, copied to the host and checked (the message is the CPU twin's).
std::vector<int32_t> checked_indices(const int32_t* idx, int N, int V, Stream stream) {
  std::vector<int32_t> h(static_cast<size_t>(N));
  cudaCheck(cudaMemcpyAsync(h.data(), idx, sizeof(int32_t) * size_t(N), cudaMemcpyDeviceToHost, stream));
  cudaCheck(cudaStreamSynchronize(stream));
  for (int n = 0; n < N; n++)
    ENSURE(h[size_t(n)] >= 0 && h[size_t(n)] < V,
           "embedding: token id %d at position %d is outside [0, %d)", h[size_t(n)], n, V);
  return h;
}

}  // namespace

template <typename T>
void embedding_forward(T* y, const int32_t* idx, const T* wte, int N, int V, int C, Stream stream) {
  ENSURE(N >= 0 && V > 0 && C > 0, "embedding_forward: bad sizes N=%d V=%d C=%d", N, V, C);
  if (N == 0) return;
  checked_indices(idx, N, V, stream);
  embedding_forward_checked(y, idx, wte, N, V, C, stream);
}

template <typename T>
void embedding_forward_checked(T* y, const int32_t* idx, const T* wte, int N, int V, int C, Stream stream) {
  ENSURE(N >= 0 && V > 0 && C > 0, "embedding_forward: bad sizes N=%d V=%d C=%d", N, V, C);
  if (N == 0) return;
  launch_kernel(embedding_forward_kernel<T>, N, threads_for(C), 0, stream, y, idx, wte, V, C);
}

template <typename T>
void embedding_backward(float* dwte, const T* dy, const int32_t* idx, int N, int V, int C,
                        Stream stream) {
  ENSURE(N >= 0 && V > 0 && C > 0, "embedding_backward: bad sizes N=%d V=%d C=%d", N, V, C);
  if (N == 0) return;
  const std::vector<int32_t> h = checked_indices(idx, N, V, stream);
  // Buckets: positions sorted by token, ties kept in position order.
  std::vector<int32_t> order(h.size());
  for (int n = 0; n < N; n++) order[size_t(n)] = n;
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return h[size_t(a)] < h[size_t(b)]; });
  std::vector<int32_t> tokens, starts;
  for (int k = 0; k < N; k++)
    if (k == 0 || h[size_t(order[size_t(k)])] != h[size_t(order[size_t(k - 1)])]) {
      tokens.push_back(h[size_t(order[size_t(k)])]);
      starts.push_back(k);
    }
  starts.push_back(N);
  const int U = int(tokens.size());
  // One upload: tokens, starts, positions.
  std::vector<int32_t> packed(tokens);
  packed.insert(packed.end(), starts.begin(), starts.end());
  packed.insert(packed.end(), order.begin(), order.end());
  // (A copy from pageable memory returns once `packed` has been staged, so it may go out of scope.)
  DeviceScratch<int32_t> scratch(packed.size(), stream);
  int32_t* d = scratch.p;
  cudaCheck(cudaMemcpyAsync(d, packed.data(), sizeof(int32_t) * packed.size(), cudaMemcpyHostToDevice, stream));
  launch_kernel(embedding_backward_kernel<T>, U, threads_for(C), 0, stream, dwte, dy, d, d + U,
                d + 2 * U + 1, C);
}

#define INSTANTIATE(T)                                                                             \
  template void embedding_forward<T>(T*, const int32_t*, const T*, int, int, int, Stream);         \
  template void embedding_forward_checked<T>(T*, const int32_t*, const T*, int, int, int, Stream); \
  template void embedding_backward<T>(float*, const T*, const int32_t*, int, int, int, Stream);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace lolcats::cuda
