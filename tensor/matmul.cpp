#include "tensor/matmul.h"

#include <Eigen/Core>

namespace lolcats {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename T>
static void gemm_one(T* c, const T* a, const T* b, int M, int N, int K, bool ta, bool tb, bool acc) {
  Eigen::Map<RowMat<T>> C(c, M, N);
  Eigen::Map<const RowMat<T>> A(a, ta ? K : M, ta ? M : K);
  Eigen::Map<const RowMat<T>> B(b, tb ? N : K, tb ? K : N);
  // Four explicit cases: Eigen picks the right GEMM kernel for each transpose at compile time.
  if (acc) {
    if (!ta && !tb) C.noalias() += A * B;
    if (!ta && tb) C.noalias() += A * B.transpose();
    if (ta && !tb) C.noalias() += A.transpose() * B;
    if (ta && tb) C.noalias() += A.transpose() * B.transpose();
  } else {
    if (!ta && !tb) C.noalias() = A * B;
    if (!ta && tb) C.noalias() = A * B.transpose();
    if (ta && !tb) C.noalias() = A.transpose() * B;
    if (ta && tb) C.noalias() = A.transpose() * B.transpose();
  }
}

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int batch, int M, int N, int K, bool trans_a,
                    bool trans_b, bool accumulate) {
  const int64_t sa = int64_t(M) * K, sb = int64_t(K) * N, sc = int64_t(M) * N;
  if (batch == 1) {  // one big product: let Eigen split it across threads
    gemm_one(c, a, b, M, N, K, trans_a, trans_b, accumulate);
    return;
  }
  // Many products: one per thread (Eigen stays single-threaded inside an OpenMP region).
#pragma omp parallel for schedule(dynamic)
  for (int i = 0; i < batch; i++)
    gemm_one(c + i * sc, a + i * sa, b + i * sb, M, N, K, trans_a, trans_b, accumulate);
}

template <typename T>
void matmul_backward(T* da, T* db, const T* dc, const T* a, const T* b, int batch, int M, int N,
                     int K, bool trans_a, bool trans_b, bool accumulate_da, bool accumulate_db) {
  if (da) {
    if (!trans_a)  // dA (M,K) = dC (M,N) @ op(B)^T
      matmul_forward(da, dc, b, batch, M, K, N, false, !trans_b, accumulate_da);
    else  // dA (K,M) = op(B) (K,N) @ dC^T
      matmul_forward(da, b, dc, batch, K, M, N, trans_b, true, accumulate_da);
  }
  if (db) {
    if (!trans_b)  // dB (K,N) = op(A)^T @ dC
      matmul_forward(db, a, dc, batch, K, N, M, !trans_a, false, accumulate_db);
    else  // dB (N,K) = dC^T @ op(A)
      matmul_forward(db, dc, a, batch, N, K, M, true, trans_a, accumulate_db);
  }
}

template void matmul_forward<float>(float*, const float*, const float*, int, int, int, int, bool,
                                    bool, bool);
template void matmul_forward<double>(double*, const double*, const double*, int, int, int, int,
                                     bool, bool, bool);
template void matmul_backward<float>(float*, float*, const float*, const float*, const float*, int,
                                     int, int, int, bool, bool, bool, bool);
template void matmul_backward<double>(double*, double*, const double*, const double*,
                                      const double*, int, int, int, int, bool, bool, bool, bool);

}  // namespace lolcats
