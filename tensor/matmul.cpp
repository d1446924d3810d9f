#include "tensor/matmul.h"
#include "tensor/op_profile.h"

#include "tensor/device.h"
#include "tensor/gemm.h"
#ifdef LOLCATS_CUDA
#include "cuda/gemm.h"
#endif

#include <Eigen/Core>

#include <cstdlib>
#include <cstring>
#include <type_traits>

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

// f32 products big enough to repay packing B go to our own kernel (tensor/gemm.h). Measured
// against Eigen on an AVX-512 host it wins from about 64 rows of A, and loses below kernel_cols
// columns, where most of its register tile would be padding. Eigen stays the simple version:
// double (the finite-difference tests), small products, any target without AVX2, and every f32
// product when LOLCATS_GEMM=eigen (A/B runs, ./bench matmul's eigen side).
bool use_packed_gemm(int M, int N) {
  static const bool eigen_only = [] {
    const char* env = std::getenv("LOLCATS_GEMM");
    return env && std::strcmp(env, "eigen") == 0;
  }();
  return !eigen_only && gemm_simd_target() && M >= 64 && N >= gemm_kernel_cols();
}

template <typename T>
static void gemm_dispatch(T* c, const T* a, const T* b, int M, int N, int K, bool ta, bool tb, bool acc) {
  if constexpr (std::is_same_v<T, float>)
    if (use_packed_gemm(M, N)) return gemm_packed(c, a, b, M, N, K, transpose_of(ta, tb), accumulate_if(acc));
  gemm_one(c, a, b, M, N, K, ta, tb, acc);
}

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int batch, int M, int N, int K, Transpose t,
                    Accumulate acc) {
  const bool trans_a = transposes_a(t), trans_b = transposes_b(t), accumulate = acc == Accumulate::yes;
  const int64_t sa = int64_t(M) * K, sb = int64_t(K) * N, sc = int64_t(M) * N;
  if (batch == 1) {  // one big product: split across threads inside
    gemm_dispatch(c, a, b, M, N, K, trans_a, trans_b, accumulate);
    return;
  }
  // Many products: one per thread (both GEMMs stay single-threaded inside an OpenMP region).
#pragma omp parallel for schedule(dynamic)
  for (int i = 0; i < batch; i++)
    gemm_dispatch(c + i * sc, a + i * sa, b + i * sb, M, N, K, trans_a, trans_b, accumulate);
}

template <typename T>
void matmul_backward(T* da, T* db, const T* dc, const T* a, const T* b, int batch, int M, int N,
                     int K, Transpose t, Accumulate acc_da, Accumulate acc_db) {
  const bool trans_a = transposes_a(t), trans_b = transposes_b(t);
  if (da) {
    if (!trans_a)  // dA (M,K) = dC (M,N) @ op(B)^T
      matmul_forward(da, dc, b, batch, M, K, N, transpose_of(false, !trans_b), acc_da);
    else  // dA (K,M) = op(B) (K,N) @ dC^T
      matmul_forward(da, b, dc, batch, K, M, N, transpose_of(trans_b, true), acc_da);
  }
  if (db) {
    if (!trans_b)  // dB (K,N) = op(A)^T @ dC
      matmul_forward(db, a, dc, batch, K, N, M, transpose_of(!trans_a, false), acc_db);
    else  // dB (N,K) = dC^T @ op(A)
      matmul_forward(db, dc, a, batch, N, K, M, transpose_of(true, trans_a), acc_db);
  }
}

void matmul_eigen(float* c, const float* a, const float* b, int M, int N, int K, Transpose t, Accumulate acc) {
  gemm_one(c, a, b, M, N, K, transposes_a(t), transposes_b(t), acc == Accumulate::yes);
}

template void matmul_forward<float>(float*, const float*, const float*, int, int, int, int, Transpose,
                                    Accumulate);
template void matmul_forward<double>(double*, const double*, const double*, int, int, int, int,
                                     Transpose, Accumulate);
template void matmul_backward<float>(float*, float*, const float*, const float*, const float*, int,
                                     int, int, int, Transpose, Accumulate, Accumulate);
template void matmul_backward<double>(double*, double*, const double*, const double*,
                                      const double*, int, int, int, int, Transpose, Accumulate, Accumulate);


// ---- Tensor-level entry points ---------------------------------------------------------------------

namespace {
void check_numel(const char* what, const Tensor& t, int64_t want) {
  ENSURE(t.numel() == want, "matmul: %s %s has %lld values, the sizes need %lld", what,
         t.shape().str().c_str(), (long long)t.numel(), (long long)want);
}
#ifdef LOLCATS_CUDA
// One gradient output on the device: its own dtype decides the kernel's output type.
template <typename T>
void cuda_grad(Tensor* da, Tensor* db, const Tensor& dc, const Tensor& a, const Tensor& b, int batch,
               int M, int N, int K, Transpose t, Accumulate acc_a, Accumulate acc_b) {
  Tensor* g = da ? da : db;
  if (g->dtype() == DType::f32)
    cuda::matmul_backward<T, float>(da ? da->dev<float>() : nullptr, db ? db->dev<float>() : nullptr,
                                    dc.dev<T>(), a.dev<T>(), b.dev<T>(), batch, M, N, K, t, acc_a, acc_b);
  else
    cuda::matmul_backward<T, T>(da ? da->dev<T>() : nullptr, db ? db->dev<T>() : nullptr, dc.dev<T>(),
                                a.dev<T>(), b.dev<T>(), batch, M, N, K, t, acc_a, acc_b);
}
#endif
}  // namespace

void matmul_forward(Tensor& c, const Tensor& a, const Tensor& b, int batch, int M, int N, int K, Transpose t,
                    Accumulate acc) {
  check_numel("A", a, int64_t(batch) * M * K);
  check_numel("B", b, int64_t(batch) * K * N);
  check_numel("C", c, int64_t(batch) * M * N);
  bool cpu = check_operands("matmul", {&a, &b});
  check_devices("matmul", {&a, &c});
  if (cpu) {
    ENSURE(c.dtype() == DType::f32, "matmul: cpu output must be f32, got %s", dtype_name(c.dtype()));
    return matmul_forward(c.f32(), a.f32(), b.f32(), batch, M, N, K, t, acc);
  }
#ifdef LOLCATS_CUDA
  OpTimer timer(OpKind::gemm, 2.0 * batch * M * N * K, double(a.nbytes() + b.nbytes() + c.nbytes()));
  cuda::GemmShape g{batch, M, N, K, t, acc};
  if (a.dtype() == DType::f32) {
    ENSURE(c.dtype() == DType::f32, "matmul: f32 operands give an f32 output, not %s", dtype_name(c.dtype()));
    cuda::gemm(c.dev<float>(), a.dev<float>(), b.dev<float>(), g);
  } else if (c.dtype() == DType::bf16) {
    cuda::gemm(c.dev<cuda::bf16>(), a.dev<cuda::bf16>(), b.dev<cuda::bf16>(), g);
  } else {
    cuda::gemm(c.dev<float>(), a.dev<cuda::bf16>(), b.dev<cuda::bf16>(), g);
  }
#else
  ON_CUDA(a.dtype(), T, (void)0);
#endif
}

void matmul_backward(Tensor* da, Tensor* db, const Tensor& dc, const Tensor& a, const Tensor& b,
                     int batch, int M, int N, int K, Transpose t, Accumulate acc_da, Accumulate acc_db) {
  check_numel("A", a, int64_t(batch) * M * K);
  check_numel("B", b, int64_t(batch) * K * N);
  check_numel("dC", dc, int64_t(batch) * M * N);
  if (da) check_numel("dA", *da, a.numel());
  if (db) check_numel("dB", *db, b.numel());
  bool cpu = check_operands("matmul backward", {&dc, &a, &b});
  check_devices("matmul backward", {&a, da, db});
  if (cpu) {
    for (Tensor* g : {da, db})
      ENSURE(!g || g->dtype() == DType::f32, "matmul backward: cpu gradients are f32");
    return matmul_backward(da ? da->f32() : nullptr, db ? db->f32() : nullptr, dc.f32(), a.f32(), b.f32(),
                           batch, M, N, K, t, acc_da, acc_db);
  }
  // Each gradient on its own: dA (an activation's, bf16) and dB (a weight's, f32) may differ.
  OpTimer timer(OpKind::gemm, 2.0 * batch * M * N * K * ((da ? 1 : 0) + (db ? 1 : 0)),
                double(dc.nbytes() + a.nbytes() + b.nbytes() + (da ? da->nbytes() : 0) + (db ? db->nbytes() : 0)));
  ON_CUDA(a.dtype(), T, {
    if (da) cuda_grad<T>(da, nullptr, dc, a, b, batch, M, N, K, t, acc_da, Accumulate::no);
    if (db) cuda_grad<T>(nullptr, db, dc, a, b, batch, M, N, K, t, Accumulate::no, acc_db);
  });
}

}  // namespace lolcats
