#include "tensor/embedding.h"
#include "tensor/op_profile.h"

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/embedding.h"
#endif

#include <cstring>

#include "tensor/check.h"

namespace lolcats {

static void check_indices(const int32_t* idx, int N, int V) {
  for (int n = 0; n < N; n++)
    ENSURE(idx[n] >= 0 && idx[n] < V, "embedding: token id %d at position %d is outside [0, %d)",
          idx[n], n, V);
}

template <typename T>
void embedding_forward(T* y, const int32_t* idx, const T* wte, int N, int V, int C) {
  check_indices(idx, N, V);
#pragma omp parallel for
  for (int n = 0; n < N; n++) std::memcpy(y + int64_t(n) * C, wte + int64_t(idx[n]) * C, C * sizeof(T));
}

template <typename T>
void embedding_backward(T* dwte, const T* dy, const int32_t* idx, int N, int V, int C) {
  check_indices(idx, N, V);
  // Parallel over channels, not tokens: two tokens with the same id write the same row, but a
  // channel slice of every row belongs to exactly one thread.
#pragma omp parallel for
  for (int c0 = 0; c0 < C; c0 += 64) {
    int c1 = c0 + 64 < C ? c0 + 64 : C;
    for (int n = 0; n < N; n++) {
      T* row = dwte + int64_t(idx[n]) * C;
      const T* g = dy + int64_t(n) * C;
      for (int c = c0; c < c1; c++) row[c] += g[c];
    }
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int, int, int);
template void embedding_forward<double>(double*, const int32_t*, const double*, int, int, int);
template void embedding_backward<float>(float*, const float*, const int32_t*, int, int, int);
template void embedding_backward<double>(double*, const double*, const int32_t*, int, int, int);


// ---- Tensor-level entry points ---------------------------------------------------------------------

void embedding_forward(Tensor& y, const Tensor& idx, const Tensor& wte) {
  ENSURE(idx.dtype() == DType::i32, "embedding: token ids must be i32, got %s", dtype_name(idx.dtype()));
  ENSURE(wte.ndim() == 2, "embedding: table must be (V, C), got %s", wte.shape().str().c_str());
  int V = int(wte.size(0)), C = int(wte.size(1)), N = int(idx.numel());
  ENSURE(y.numel() == int64_t(N) * C && y.size(-1) == C, "embedding: output %s for %d ids of %d channels",
         y.shape().str().c_str(), N, C);
  if (idx.device() == Device::cpu && wte.device() == Device::cuda) {
    // Host ids for a device table: checked here and uploaded once, so the device never reports
    // on them (that report would wait for every op queued before it).
    check_indices(idx.i32(), N, V);
    Tensor ids = idx.to(Device::cuda);
    check_operands("embedding", {&y, &wte});
    OpTimer timer(OpKind::other, 0, 2.0 * y.nbytes() + idx.nbytes());
    ON_CUDA(wte.dtype(), T, cuda::embedding_forward_checked(y.dev<T>(), ids.dev<int32_t>(), wte.dev<T>(), N, V, C, nullptr));
    return;
  }
  check_devices("embedding", {&y, &idx});
  if (check_operands("embedding", {&y, &wte})) return embedding_forward(y.f32(), idx.i32(), wte.f32(), N, V, C);
  OpTimer timer(OpKind::other, 0, 2.0 * y.nbytes() + idx.nbytes());
  ON_CUDA(wte.dtype(), T, cuda::embedding_forward(y.dev<T>(), idx.dev<int32_t>(), wte.dev<T>(), N, V, C, nullptr));
}

void embedding_backward(Tensor& dwte, const Tensor& dy, const Tensor& idx) {
  int V = int(dwte.size(0)), C = int(dwte.size(1)), N = int(idx.numel());
  ENSURE(dy.numel() == int64_t(N) * C, "embedding backward: gradient %s for %d ids of %d channels",
         dy.shape().str().c_str(), N, C);
  ENSURE(dwte.dtype() == DType::f32, "embedding backward: the table's gradient is f32, got %s", dtype_name(dwte.dtype()));
  const Tensor ids = idx.device() == dy.device() ? idx : idx.to(dy.device());  // host ids (embed) on the device
  bool cpu = check_devices("embedding backward", {&dwte, &dy, &ids});
  if (cpu) return embedding_backward(dwte.f32(), dy.f32(), ids.i32(), N, V, C);
  OpTimer timer(OpKind::other, double(dy.numel()), op_bytes({&dy, &ids}) + 2.0 * N * C * 4);
  ON_CUDA(dy.dtype(), T, cuda::embedding_backward(dwte.dev<float>(), dy.dev<T>(), ids.dev<int32_t>(), N, V, C, nullptr));
}

}  // namespace lolcats
