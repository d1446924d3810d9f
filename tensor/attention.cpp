#include "tensor/attention.h"

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/attention.h"
#endif

#include <Eigen/Core>
#include <cmath>
#include <limits>

#include "tensor/check.h"
#include "tensor/heads.h"

namespace lolcats {

namespace {

constexpr int kTile = 64;  // query rows per score tile

// Scores of query rows [i0, i0+rows) against keys [0, i0+rows), causally masked, scaled.
template <typename T>
void tile_scores(Mat<T>& s, const Strided<T>& qt, const Strided<T>& kall, int i0, T scale) {
  int rows = int(qt.rows()), keys = i0 + rows;
  s.resize(rows, keys);
  s.noalias() = qt * kall.topRows(keys).transpose();
  s *= scale;
  for (int r = 0; r < rows; r++)
    for (int j = i0 + r + 1; j < keys; j++) s(r, j) = -std::numeric_limits<T>::infinity();
}

}  // namespace

template <typename T>
void attention_forward(T* y, T* lse, const T* q, const T* k, const T* v, int B, int T_, int H,
                       int Hkv, int D) {
  ENSURE(Hkv > 0 && H % Hkv == 0, "attention: %d query heads not divisible by %d kv heads", H, Hkv);
  const int G = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      Mat<T> s;
      Strided<T> kall = head(k, b, 0, T_, h / G, T_, Hkv, D);
      Strided<T> vall = head(v, b, 0, T_, h / G, T_, Hkv, D);
      for (int i0 = 0; i0 < T_; i0 += kTile) {
        int rows = std::min(kTile, T_ - i0), keys = i0 + rows;
        tile_scores(s, head(q, b, i0, rows, h, T_, H, D), kall, i0, scale);
        for (int r = 0; r < rows; r++) {  // row softmax, remembering log-sum-exp
          T m = s.row(r).maxCoeff();
          s.row(r) = (s.row(r).array() - m).exp();
          T sum = s.row(r).sum();
          s.row(r) /= sum;
          lse[(int64_t(b) * H + h) * T_ + i0 + r] = m + std::log(sum);
        }
        head_mut(y, b, i0, rows, h, T_, H, D).noalias() = s * vall.topRows(keys);
      }
    }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dy, const T* y, const T* lse, const T* q,
                        const T* k, const T* v, int B, int T_, int H, int Hkv, int D) {
  const int G = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  // One task per (batch, kv head): it owns dk/dv of that head, so the G query heads that share it
  // can accumulate without races.
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < B; b++)
    for (int g = 0; g < Hkv; g++) {
      Strided<T> kall = head(k, b, 0, T_, g, T_, Hkv, D);
      Strided<T> vall = head(v, b, 0, T_, g, T_, Hkv, D);
      Mat<T> dk_acc = Mat<T>::Zero(T_, D), dv_acc = Mat<T>::Zero(T_, D), s, dp;
      for (int h = g * G; h < (g + 1) * G; h++)
        for (int i0 = 0; i0 < T_; i0 += kTile) {
          int rows = std::min(kTile, T_ - i0), keys = i0 + rows;
          Strided<T> qt = head(q, b, i0, rows, h, T_, H, D);
          Strided<T> dyt = head(dy, b, i0, rows, h, T_, H, D);
          Strided<T> yt = head(y, b, i0, rows, h, T_, H, D);
          tile_scores(s, qt, kall, i0, scale);
          for (int r = 0; r < rows; r++)  // P from the saved lse (masked entries -> exp(-inf) = 0)
            s.row(r) = (s.row(r).array() - lse[(int64_t(b) * H + h) * T_ + i0 + r]).exp();
          dv_acc.topRows(keys).noalias() += s.transpose() * dyt;
          dp.noalias() = dyt * vall.topRows(keys).transpose();
          for (int r = 0; r < rows; r++) {
            T delta = dyt.row(r).dot(yt.row(r));
            s.row(r) = s.row(r).array() * (dp.row(r).array() - delta);  // s now holds dS
          }
          head_mut(dq, b, i0, rows, h, T_, H, D).noalias() = scale * (s * kall.topRows(keys));
          dk_acc.topRows(keys).noalias() += scale * (s.transpose() * qt);
        }
      head_mut(dk, b, 0, T_, g, T_, Hkv, D) = dk_acc;
      head_mut(dv, b, 0, T_, g, T_, Hkv, D) = dv_acc;
    }
}

template <typename T>
void attention_forward_cached(T* y, const T* q, const T* k_cache, const T* v_cache, int Tq,
                              int start, int H, int Hkv, int D) {
  ENSURE(Hkv > 0 && H % Hkv == 0, "attention: %d query heads not divisible by %d kv heads", H, Hkv);
  const int G = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int i = 0; i < Tq; i++)
    for (int h = 0; h < H; h++) {
      const int keys = start + i + 1;  // causal: everything up to and including this position
      Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>> qi(q + (int64_t(i) * H + h) * D, D);
      Strided<T> kall = head(k_cache, 0, 0, keys, h / G, keys, Hkv, D);
      Strided<T> vall = head(v_cache, 0, 0, keys, h / G, keys, Hkv, D);
      Eigen::Matrix<T, Eigen::Dynamic, 1> p = (kall * qi) * scale;  // (keys)
      p = (p.array() - p.maxCoeff()).exp();
      p /= p.sum();
      Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(y + (int64_t(i) * H + h) * D, D).noalias() =
          p.transpose() * vall;
    }
}

template void attention_forward_cached<float>(float*, const float*, const float*, const float*,
                                              int, int, int, int, int);

template void attention_forward<float>(float*, float*, const float*, const float*, const float*,
                                       int, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, const double*,
                                        const double*, int, int, int, int, int);
template void attention_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, const float*,
                                        int, int, int, int, int);
template void attention_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, int, int, int, int, int);


// ---- Tensor-level entry points ---------------------------------------------------------------------

namespace {
struct AttnDims { int B, T, H, Hkv, D; };
AttnDims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse) {
  const Shape &sq = q.shape(), &sk = k.shape();
  ENSURE(sq.ndim == 4 && sk.ndim == 4, "%s: q %s and k %s must be (B, T, heads, D)", op, sq.str().c_str(), sk.str().c_str());
  check_same_shape(op, k, v);
  AttnDims d{int(sq[0]), int(sq[1]), int(sq[2]), int(sk[2]), int(sq[3])};
  ENSURE(sk[0] == d.B && sk[1] == d.T && sk[3] == d.D && d.Hkv > 0 && d.H % d.Hkv == 0,
         "%s: q %s does not match k/v %s", op, sq.str().c_str(), sk.str().c_str());
  check_shape(lse, {d.B, d.H, d.T}, "attention lse");
  check_devices(op, {&q, &lse});
  return d;
}
}  // namespace

void attention_forward(Tensor& y, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v) {
  AttnDims d = check_attention("attention", q, k, v, lse);
  check_same_shape("attention", y, q);
  if (check_operands("attention", {&y, &q, &k, &v}))
    return attention_forward(y.f32(), lse.f32(), q.f32(), k.f32(), v.f32(), d.B, d.T, d.H, d.Hkv, d.D);
  ON_CUDA(q.dtype(), T, cuda::attention_forward(y.dev<T>(), lse.dev<float>(), q.dev<T>(), k.dev<T>(), v.dev<T>(),
                                                d.B, d.T, d.H, d.Hkv, d.D, nullptr));
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dy, const Tensor& y,
                        const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v) {
  AttnDims d = check_attention("attention backward", q, k, v, lse);
  check_same_shape("attention backward", dq, q);
  check_same_shape("attention backward", dk, k);
  check_same_shape("attention backward", dv, v);
  check_same_shape("attention backward", dy, q);
  check_same_shape("attention backward", y, q);
  if (check_operands("attention backward", {&dq, &dk, &dv, &dy, &y, &q, &k, &v}))
    return attention_backward(dq.f32(), dk.f32(), dv.f32(), dy.f32(), y.f32(), lse.f32(), q.f32(),
                              k.f32(), v.f32(), d.B, d.T, d.H, d.Hkv, d.D);
  ON_CUDA(q.dtype(), T, cuda::attention_backward(dq.dev<T>(), dk.dev<T>(), dv.dev<T>(), dy.dev<T>(), y.dev<T>(),
                                                 lse.dev<float>(), q.dev<T>(), k.dev<T>(), v.dev<T>(),
                                                 d.B, d.T, d.H, d.Hkv, d.D, nullptr));
}



}  // namespace lolcats
