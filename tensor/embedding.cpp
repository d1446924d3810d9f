#include "tensor/embedding.h"

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

}  // namespace lolcats
