#include "tensor/loss.h"
#include "tensor/op_profile.h"

#include "tensor/device.h"
#include "tensor/matmul.h"
#ifdef LOLCATS_CUDA
#include "cuda/cross_entropy.h"
#include "cuda/mse.h"
#endif

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "tensor/check.h"

namespace lolcats {

template <typename T> using Row = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;  // a row of logits
template <typename T> using RowMut = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

static int count_labels(const int32_t* targets, int N, int V, int ignore_index) {
  int m = 0;
  for (int n = 0; n < N; n++) {
    if (targets[n] == ignore_index) continue;
    ENSURE(targets[n] >= 0 && targets[n] < V, "cross_entropy: target %d at row %d is outside [0, %d)",
          targets[n], n, V);
    m++;
  }
  return m;
}

template <typename T>
double cross_entropy_forward(T* lse, const T* logits, const int32_t* targets, int N, int V,
                             int ignore_index) {
  int m = count_labels(targets, N, V, ignore_index);
  double total = 0;
#pragma omp parallel for reduction(+ : total)
  for (int n = 0; n < N; n++) {
    const T* row = logits + int64_t(n) * V;
    const Row<T> r(row, V);
    const T mx = r.maxCoeff();
    // sum_v exp(row[v] - mx): Eigen's SIMD exp, summed in T over 256 terms at a time (each in
    // (0, 1]: a few ulp), the partial sums added in double over the whole vocabulary.
    double s = 0;
    for (int v0 = 0; v0 < V; v0 += 256) s += double((r.segment(v0, std::min(256, V - v0)) - mx).exp().sum());
    double l = double(mx) + std::log(s);
    lse[n] = T(l);
    if (targets[n] != ignore_index) total += l - double(row[targets[n]]);
  }
  return m ? total / m : 0.0;
}

template <typename T>
void cross_entropy_backward(T* dlogits, double dloss, const T* logits, const T* lse,
                            const int32_t* targets, int N, int V, int ignore_index) {
  int m = count_labels(targets, N, V, ignore_index);
  const T g = m ? T(dloss / m) : T(0);
#pragma omp parallel for
  for (int n = 0; n < N; n++) {
    const T* row = logits + int64_t(n) * V;
    T* drow = dlogits + int64_t(n) * V;
    if (targets[n] == ignore_index) {
      for (int v = 0; v < V; v++) drow[v] = 0;
      continue;
    }
    RowMut<T>(drow, V) = g * (Row<T>(row, V) - lse[n]).exp();  // softmax * g, SIMD exp
    drow[targets[n]] -= g;
  }
}

template <typename T> double mse_forward(const T* a, const T* b, int64_t n) {
  double s = 0;
#pragma omp parallel for reduction(+ : s)
  for (int64_t i = 0; i < n; i++) {
    double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return n ? s / double(n) : 0.0;
}
template <typename T>
void mse_backward(T* da, T* db, double dloss, const T* a, const T* b, int64_t n) {
  const T g = T(2 * dloss / double(n));
#pragma omp parallel for
  for (int64_t i = 0; i < n; i++) {
    T d = g * (a[i] - b[i]);
    if (da) da[i] = d;
    if (db) db[i] = -d;
  }
}

template <typename T> double sum_forward(const T* x, int64_t n) {
  double s = 0;
#pragma omp parallel for reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += double(x[i]);
  return s;
}
template <typename T> void sum_backward(T* dx, double dy, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; i++) dx[i] = T(dy);
}
template <typename T> double mean_forward(const T* x, int64_t n) {
  return n ? sum_forward(x, n) / double(n) : 0.0;
}
template <typename T> void mean_backward(T* dx, double dy, int64_t n) {
  sum_backward(dx, dy / double(n), n);
}

#define INSTANTIATE(T)                                                                          \
  template double cross_entropy_forward<T>(T*, const T*, const int32_t*, int, int, int);        \
  template void cross_entropy_backward<T>(T*, double, const T*, const T*, const int32_t*, int, \
                                          int, int);                                            \
  template double mse_forward<T>(const T*, const T*, int64_t);                                  \
  template void mse_backward<T>(T*, T*, double, const T*, const T*, int64_t);                   \
  template double sum_forward<T>(const T*, int64_t);                                            \
  template void sum_backward<T>(T*, double, int64_t);                                           \
  template double mean_forward<T>(const T*, int64_t);                                           \
  template void mean_backward<T>(T*, double, int64_t);
INSTANTIATE(float)
INSTANTIATE(double)


// ---- Tensor-level entry points ---------------------------------------------------------------------

namespace {
void check_ce(const char* /*op*/, const Tensor& lse, const Tensor& targets, int N) {
  check_shape(targets, {N}, "cross_entropy targets", DType::i32);
  check_shape(lse, {N}, "cross_entropy lse");
}
void cpu_only(const char* op, bool cpu) {
  ENSURE(cpu, "%s has no cuda kernel (on the GPU the LM head's loss is lm_head_cross_entropy)", op);
}
}  // namespace

double cross_entropy_forward(Tensor& lse, const Tensor& logits, const Tensor& targets, int ignore_index) {
  ENSURE(logits.ndim() == 2, "cross_entropy: logits must be (N, V), got %s", logits.shape().str().c_str());
  int N = int(logits.size(0)), V = int(logits.size(1));
  check_ce("cross_entropy", lse, targets, N);
  cpu_only("cross_entropy", check_operands("cross_entropy", {&logits, &lse}) && check_devices("cross_entropy", {&logits, &targets}));
  return cross_entropy_forward(lse.f32(), logits.f32(), targets.i32(), N, V, ignore_index);
}

void cross_entropy_backward(Tensor& dlogits, double dloss, const Tensor& logits, const Tensor& lse,
                            const Tensor& targets, int ignore_index) {
  int N = int(logits.size(0)), V = int(logits.size(1));
  check_ce("cross_entropy backward", lse, targets, N);
  check_same_shape("cross_entropy backward", dlogits, logits);
  cpu_only("cross_entropy", check_operands("cross_entropy backward", {&dlogits, &logits, &lse}));
  cross_entropy_backward(dlogits.f32(), dloss, logits.f32(), lse.f32(), targets.i32(), N, V, ignore_index);
}

Tensor checked_targets(const Tensor& targets, int V, Device device, int ignore_index) {
  ENSURE(targets.dtype() == DType::i32, "cross_entropy targets must be i32, got %s", dtype_name(targets.dtype()));
  // Device targets were checked when they were uploaded; on the CPU the kernel checks them.
  if (targets.device() != Device::cpu || device == Device::cpu) return targets;
  const int32_t* t = targets.i32();
  for (int64_t n = 0; n < targets.numel(); n++)
    ENSURE(t[n] == ignore_index || (t[n] >= 0 && t[n] < V),
           "cross_entropy: target of row %lld is %d, outside [0, %d) and not the ignore index %d",
           static_cast<long long>(n), t[n], V, ignore_index);
  return targets.to(device);
}

void lm_head_cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& x, const Tensor& w,
                                   const Tensor& targets, int ignore_index) {
  ENSURE(w.ndim() == 2 && x.size(-1) == w.size(1), "lm_head_cross_entropy: x %s does not fit the head %s",
         x.shape().str().c_str(), w.shape().str().c_str());
  int C = int(w.size(1)), V = int(w.size(0)), N = int(x.numel() / C);
  check_ce("lm_head_cross_entropy", lse, targets, N);
  check_shape(loss, {1}, "lm_head_cross_entropy loss", DType::f32);
  bool cpu = check_operands("lm_head_cross_entropy", {&x, &w});
  Tensor dev_targets = checked_targets(targets, V, x.device(), ignore_index);
  check_devices("lm_head_cross_entropy", {&x, &lse, &loss, &dev_targets});
  if (cpu) {
    Tensor logits = Tensor::empty({N, V});
    matmul_forward(logits, x, w, 1, N, V, C, Transpose::b);
    loss.f32()[0] = float(cross_entropy_forward(lse, logits, targets, ignore_index));
    return;
  }
#ifdef LOLCATS_CUDA
  OpTimer timer(OpKind::loss, 2.0 * N * V * C, op_bytes({&x, &w, &lse, &dev_targets}));
  int chunk = cuda::lm_head_chunk(N, V);
  Tensor ws = Tensor::empty({int64_t(cuda::lm_head_cross_entropy_workspace(N, C, chunk) / 4 + 1)}, DType::i32, Device::cuda);
  ON_CUDA(x.dtype(), T, cuda::lm_head_cross_entropy_forward(loss.dev<float>(), lse.dev<float>(), x.dev<T>(), w.dev<T>(),
                                                            dev_targets.dev<int32_t>(), N, C, V, ignore_index, chunk,
                                                            ws.data(), nullptr));
#else
  ON_CUDA(x.dtype(), T, (void)0);
#endif
}

void lm_head_cross_entropy_backward(Tensor* dx, Tensor* dw, double dloss, const Tensor& x, const Tensor& w,
                                    const Tensor& lse, const Tensor& targets, int ignore_index) {
  int C = int(w.size(1)), V = int(w.size(0)), N = int(x.numel() / C);
  check_ce("lm_head_cross_entropy backward", lse, targets, N);
  if (dx) check_same_shape("lm_head_cross_entropy backward", *dx, x);
  if (dw) check_shape(*dw, {V, C}, "LM head gradient");
  bool cpu = check_operands("lm_head_cross_entropy backward", {dx, &x, &w});
  check_devices("lm_head_cross_entropy backward", {&x, &lse, &targets, dw});
  if (cpu) {
    Tensor logits = Tensor::empty({N, V}), dlogits = Tensor::empty({N, V});
    matmul_forward(logits, x, w, 1, N, V, C, Transpose::b);
    cross_entropy_backward(dlogits, dloss, logits, lse, targets, ignore_index);
    matmul_backward(dx, dw, dlogits, x, w, 1, N, V, C, Transpose::b, Accumulate::no, Accumulate::yes);
    return;
  }
#ifdef LOLCATS_CUDA
  // The logits again (2 N V C) and the two gradients' products (2 N V C each, dw's when wanted).
  OpTimer timer(OpKind::loss, 2.0 * N * V * C * (2 + (dw ? 1 : 0)), op_bytes({dx, dw, &x, &w, &lse, &targets}));
  int chunk = cuda::lm_head_chunk(N, V);
  Tensor ws = Tensor::empty({int64_t(cuda::lm_head_cross_entropy_workspace(N, C, chunk) / 4 + 1)}, DType::i32, Device::cuda);
  // The kernels need dx; a frozen input's gradient goes to scratch.
  Tensor scratch = dx ? Tensor() : Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  Tensor& dxt = dx ? *dx : scratch;
  ENSURE(!dw || dw->dtype() == DType::f32, "lm_head_cross_entropy backward: the head's gradient is f32");
  ON_CUDA(x.dtype(), T, cuda::lm_head_cross_entropy_backward(dxt.dev<T>(), dw ? dw->dev<float>() : nullptr, float(dloss),
                                                             x.dev<T>(), w.dev<T>(), lse.dev<float>(), targets.dev<int32_t>(),
                                                             N, C, V, ignore_index, chunk, ws.data(), nullptr));
#else
  ON_CUDA(x.dtype(), T, (void)0);
#endif
}

void mse_forward(Tensor& loss, const Tensor& a, const Tensor& b) {
  check_same_shape("mse", a, b);
  check_shape(loss, {1}, "mse loss");
  check_devices("mse", {&a, &loss});
  if (check_operands("mse", {&a, &b})) {
    loss.f32()[0] = float(mse_forward(a.f32(), b.f32(), a.numel()));
    return;
  }
  OpTimer timer(OpKind::loss, 3.0 * a.numel(), op_bytes({&a, &b}));
  ON_CUDA(a.dtype(), T, cuda::mse_forward(loss.dev<float>(), a.dev<T>(), b.dev<T>(), a.numel(), nullptr));
}

void mse_backward(Tensor* da, Tensor* db, double dloss, const Tensor& a, const Tensor& b) {
  check_same_shape("mse backward", a, b);
  if (check_operands("mse backward", {da, db, &a, &b}))
    return mse_backward(da ? da->f32() : nullptr, db ? db->f32() : nullptr, dloss, a.f32(), b.f32(), a.numel());
  OpTimer timer(OpKind::loss, 3.0 * a.numel(), op_bytes({da, db, &a, &b}));
  ON_CUDA(a.dtype(), T, cuda::mse_backward(da ? da->dev<T>() : nullptr, db ? db->dev<T>() : nullptr, float(dloss),
                                           a.dev<T>(), b.dev<T>(), a.numel(), nullptr));
}

double sum_forward(const Tensor& x) {
  cpu_only("sum", check_operands("sum", {&x}));
  return sum_forward(x.f32(), x.numel());
}
void sum_backward(Tensor& dx, double dy) {
  cpu_only("sum", check_operands("sum backward", {&dx}));
  sum_backward(dx.f32(), dy, dx.numel());
}
double mean_forward(const Tensor& x) {
  cpu_only("mean", check_operands("mean", {&x}));
  return mean_forward(x.f32(), x.numel());
}
void mean_backward(Tensor& dx, double dy) {
  cpu_only("mean", check_operands("mean backward", {&dx}));
  mean_backward(dx.f32(), dy, dx.numel());
}

}  // namespace lolcats
