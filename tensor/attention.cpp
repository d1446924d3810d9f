#include "tensor/attention.h"
#include "tensor/op_profile.h"

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/attention.h"
#include "cuda/decode.h"
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
void decode_attention(T* y, const T* q, const T* kc, const T* vc, const int32_t* row_seq, const int32_t* row_pos,
                      int R, int H, int Hkv, int D, int max_len) {
  ENSURE(Hkv > 0 && H % Hkv == 0, "attention: %d query heads not divisible by %d kv heads", H, Hkv);
  const int G = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  const size_t seq_stride = size_t(max_len) * Hkv * D;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int r = 0; r < R; r++)
    for (int h = 0; h < H; h++) {
      static thread_local std::vector<T> p;  // scores, then probabilities: grows once per thread
      const int keys = row_pos[r] + 1, hk = h / G;
      if (p.size() < size_t(keys)) p.resize(size_t(keys));
      const T* qr = q + (size_t(r) * H + h) * D;
      const T* kb = kc + size_t(row_seq[r]) * seq_stride + size_t(hk) * D;
      const T* vb = vc + size_t(row_seq[r]) * seq_stride + size_t(hk) * D;
      T mx = -std::numeric_limits<T>::infinity();
      for (int j = 0; j < keys; j++) {
        const T* kj = kb + size_t(j) * Hkv * D;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int d = 0; d < D; d++) s += qr[d] * kj[d];
        p[size_t(j)] = s * scale;
        mx = std::max(mx, p[size_t(j)]);
      }
      T sum = 0;
      for (int j = 0; j < keys; j++) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
      T* yr = y + (size_t(r) * H + h) * D;
      std::fill(yr, yr + D, T(0));
      for (int j = 0; j < keys; j++) {
        const T pj = p[size_t(j)] / sum, *vj = vb + size_t(j) * Hkv * D;
#pragma omp simd
        for (int d = 0; d < D; d++) yr[d] += pj * vj[d];
      }
    }
}

template void decode_attention<float>(float*, const float*, const float*, const float*, const int32_t*,
                                      const int32_t*, int, int, int, int, int);
template void decode_attention<double>(double*, const double*, const double*, const double*, const int32_t*,
                                       const int32_t*, int, int, int, int, int);

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
  // Causal: QK^T and PV over the T (T + 1) / 2 pairs of each head, 2 FLOPs per multiply-add.
  OpTimer timer(OpKind::teacher_attention, 2.0 * d.B * d.H * d.T * (d.T + 1.0) * d.D, op_bytes({&y, &lse, &q, &k, &v}));
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
  // Five products over the pairs: QK^T again, dP = dY V^T, dV = P^T dY, dQ = dS K, dK = dS^T Q.
  OpTimer timer(OpKind::teacher_attention, 5.0 * d.B * d.H * d.T * (d.T + 1.0) * d.D,
                op_bytes({&dq, &dk, &dv, &dy, &y, &lse, &q, &k, &v}));
  ON_CUDA(q.dtype(), T, cuda::attention_backward(dq.dev<T>(), dk.dev<T>(), dv.dev<T>(), dy.dev<T>(), y.dev<T>(),
                                                 lse.dev<float>(), q.dev<T>(), k.dev<T>(), v.dev<T>(),
                                                 d.B, d.T, d.H, d.Hkv, d.D, nullptr));
}


void decode_attention(Tensor& y, Tensor& k_cache, Tensor& v_cache, const Tensor& q, const Tensor& k,
                      const Tensor& v, const Tensor& row_seq, const Tensor& row_pos) {
  ENSURE(q.ndim() == 3 && k.ndim() == 3 && v.shape() == k.shape() && k_cache.ndim() == 4 &&
             v_cache.shape() == k_cache.shape(),
         "decode attention: q %s, k %s, v %s and the caches %s must be (R, H, D), (R, Hkv, D) twice and "
         "(batch, max_len, Hkv, D)", q.shape().str().c_str(), k.shape().str().c_str(), v.shape().str().c_str(),
         k_cache.shape().str().c_str());
  const int R = int(q.size(0)), H = int(q.size(1)), D = int(q.size(2)), Hkv = int(k.size(1));
  const int batch = int(k_cache.size(0)), max_len = int(k_cache.size(1));
  ENSURE(k.size(0) == R && k.size(2) == D && k_cache.size(2) == Hkv && k_cache.size(3) == D,
         "decode attention: q %s, k %s and the caches %s disagree", q.shape().str().c_str(), k.shape().str().c_str(),
         k_cache.shape().str().c_str());
  check_same_shape("decode attention", y, q);
  ENSURE(row_seq.dtype() == DType::i32 && row_pos.dtype() == DType::i32 && row_seq.numel() == R &&
             row_pos.numel() == R,
         "decode attention: row_seq and row_pos must be %d i32 values", R);
  const bool cpu = check_operands("decode attention", {&y, &q, &k, &v, &k_cache, &v_cache});
  check_devices("decode attention", {&q, &row_seq, &row_pos});
  const size_t KD = size_t(Hkv) * D;
  if (cpu) {
    for (int r = 0; r < R; r++) {
      const int b = row_seq.i32()[r], p = row_pos.i32()[r];
      ENSURE(b >= 0 && b < batch && p >= 0 && p < max_len, "decode attention: row %d (sequence %d, position %d) is "
             "outside the caches (%d sequences of %d)", r, b, p, batch, max_len);
      const size_t at = (size_t(b) * max_len + size_t(p)) * KD;
      std::copy(k.f32() + r * KD, k.f32() + (r + 1) * KD, k_cache.f32() + at);
      std::copy(v.f32() + r * KD, v.f32() + (r + 1) * KD, v_cache.f32() + at);
    }
    return decode_attention(y.f32(), q.f32(), k_cache.f32(), v_cache.f32(), row_seq.i32(), row_pos.i32(), R, H,
                            Hkv, D, max_len);
  }
  ON_CUDA(q.dtype(), T,
          cuda::kv_cache_write(k_cache.dev<T>(), v_cache.dev<T>(), k.dev<T>(), v.dev<T>(), row_seq.dev<int32_t>(),
                               row_pos.dev<int32_t>(), R, Hkv, D, max_len, nullptr);
          cuda::decode_attention(y.dev<T>(), q.dev<T>(), k_cache.dev<T>(), v_cache.dev<T>(), row_seq.dev<int32_t>(),
                                 row_pos.dev<int32_t>(), R, H, Hkv, D, max_len, nullptr));
}

}  // namespace lolcats
