// LoLCATs hybrid attention on CUDA: kernels, then launchers. The math is in
// lolcats/hybrid_attention.h, the plan of the kernels in cuda/hybrid_attention.h.
//
// Every kernel has the same shape: a thread block of 256 threads owns kRows rows (queries, keys, or
// features of a running state) and streams tiles of kCols columns through shared memory. The local
// kernels are compiled for the tiles kRows x kCols = 32 x 32, 16 x 32 and 16 x 16 and launched with
// the largest whose shared memory fits the device's per-block limit (cuda/shared_limit.cuh): 32 x 32
// on sm_90, smaller on cards with less. The tile changes only the order of work, not the math. All tiles
// are f32 with rows padded by one float (a column's reads then fall on distinct banks). Work on a
// tile is spread over the threads element by element, `for (e = threadIdx.x; e < n; e += 256)`:
// an output element is updated by one thread at a time, and phases are separated by barriers.
// Row reductions (max, sums) are done by one thread per row, in key order, so the window's argmax
// is the first maximum, as on the CPU.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/hybrid_attention.h"
#include "cuda/shared_limit.cuh"

namespace lolcats::cuda {
namespace {

constexpr int kBlock = kHybridBlock;  // the variants' 64-token block; which pairs are window: pair_kind (lolcats/window.h)
constexpr int kScanCols = 32;  // features per thread block of the state scan
constexpr int kThreads = 256;

// The tiles the local kernels are compiled for, largest first. Rows divide the 64-token block (a
// thread block's rows lie in one block of the window); rows and columns are at most kThreads (one
// thread per row or column does the row reductions and the small loads).
__host__ __device__ constexpr bool tile_ok(int rows, int cols) {
  return kBlock % rows == 0 && rows <= kThreads && cols <= kThreads;
}
constexpr KernelTile kHybridTiles[] = {{32, 32}, {16, 32}, {16, 16}};  // rows x cols, largest first

__device__ inline int imin(int a, int b) { return a < b ? a : b; }
__device__ inline int imax(int a, int b) { return a > b ? a : b; }
__device__ inline float sigmoidf(float x) { return 1.f / (1.f + expf(-x)); }
__device__ inline float dot(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int x = 0; x < n; x++) s = fmaf(a[x], b[x], s);
  return s;
}

// Hands out consecutive pieces of the dynamic shared memory.
struct SharedBump {
  float* p;
  __device__ float* take(int count) {
    float* r = p;
    p += count;
    return r;
  }
};

// dst (rows, n), row stride ld  <-  rows [0, valid) of src (row r at src + r * stride), divided by
// div[r] when div is set; the rest zeros.
template <typename T>
__device__ void load_tile(float* dst, int ld, const T* src, int64_t stride, int rows, int valid, int n,
                          const float* div = nullptr) {
  for (int e = threadIdx.x; e < rows * n; e += kThreads) {
    int r = e / n, c = e % n;
    float x = r < valid ? to_f32(src[r * stride + c]) : 0.f;
    dst[r * ld + c] = div && r < valid ? x / div[r] : x;
  }
}

// The weight of a local pair (query row q/pq, key row k/pk in shared memory): A = g exp(s - m) in
// the window (m: the query's window max), phi_q . phi_k for a linear pair, 0 for none.
__device__ inline float pair_weight(PairKind kind, const float* q, const float* k, const float* pq, const float* pk,
                                    int D, int F, float scale, float g, float m) {
  if (kind == PairKind::window) return g * expf(dot(q, k, D) * scale - m);
  if (kind == PairKind::linear) return dot(pq, pk, F);
  return 0.f;
}

// Rows [i0, i0 + rows) against their local keys [j0, kend): each row's window max m_i and the key
// where it is first reached (argmax; -1 and -inf without window pairs), one thread per row scanning
// in key order. sq holds the rows' queries; sk (kCols, D) and ss (kRows, kCols) are scratch.
template <int kRows, int kCols, typename T>
__device__ void window_max(float* rmax, int* rarg, const float* sq, float* sk, float* ss, const T* kb, int64_t ks,
                           int i0, int rows, int j0, int kend, int D, float scale, HybridVariant variant) {
  const int ldd = D + 1, ldc = kCols + 1;
  for (int kt = j0; variant != HybridVariant::linear && kt < kend; kt += kCols) {
    const int nk = imin(kCols, kend - kt);
    __syncthreads();
    load_tile(sk, ldd, kb + kt * ks, ks, kCols, nk, D);
    __syncthreads();
    for (int e = threadIdx.x; e < kRows * kCols; e += kThreads) {
      int r = e / kCols, c = e % kCols;
      bool win = r < rows && c < nk && pair_kind(i0 + r, kt + c, variant) == PairKind::window;
      ss[r * ldc + c] = win ? dot(sq + r * ldd, sk + c * ldd, D) * scale : -INFINITY;
    }
    __syncthreads();
    if (threadIdx.x < kRows)
      for (int c = 0; c < kCols; c++)
        if (ss[threadIdx.x * ldc + c] > rmax[threadIdx.x])
          rmax[threadIdx.x] = ss[threadIdx.x * ldc + c], rarg[threadIdx.x] = kt + c;
  }
}

// The local key tile [kt, kt + nk): keys, values and their features (head h), into shared memory.
template <int kCols, typename T>
__device__ void load_key_tile(float* sk, float* sv, float* spk, const T* kb, const T* vb, const float* pkb,
                              int64_t ks, int64_t fs, int kt, int nk, int D, int F) {
  load_tile(sk, D + 1, kb + kt * ks, ks, kCols, nk, D);
  load_tile(sv, D + 1, vb + kt * ks, ks, kCols, nk, D);
  load_tile(spk, F + 1, pkb + kt * fs, fs, kCols, nk, F);
}

// ---- the running states ---------------------------------------------------------------------------
// For each block x of 64 rows of one (b, h), forward (reverse = false) and reverse:
//   S[x] = sum over blocks u <= x - 2 (reverse: u >= x + 2) of  a_u^T (b_u / div_u)   (F, D)
//   z[x] = the same of  a_u^T w_u                                                      (F)
// a: (B, T_, H, F) head h;  b: (B, T_, Hb, D) head h / (H / Hb);  div, w: (B, H, T_) per row, or
// null for 1. Forward: a = phi_k, b = v (the state queries read). Reverse: a = phi_q, b = dy,
// div = Z, w = dZ (P and p of the backward).
// grid (H, B, ceil(F / kScanCols)): features [f0, f0 + 32) of one (b, h), all blocks in turn.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    state_scan_kernel(float* S, float* z, const float* a, const T* bm, const float* div, const float* w,
                      int T_, int H, int Hb, int D, int F, bool reverse) {
  EXTERN_SHARED(float, smem);
  const int ldd = D + 1, lda = kScanCols + 1;
  SharedBump sm{smem};
  float* sa = sm.take(kBlock * lda);      // (64, 32) a of one block, this slice of features
  float* sb = sm.take(kBlock * ldd);      // (64, D)  b / div of the block
  float* sw = sm.take(kBlock);            // (64)     w
  float* acc = sm.take(kScanCols * ldd);  // (32, D)  the running S slice
  float* accz = sm.take(kScanCols);       // (32)     the running z slice

  const int h = blockIdx.x, b = blockIdx.y, f0 = blockIdx.z * kScanCols, nf = imin(kScanCols, F - f0);
  const int nb = ceil_div(T_, kBlock), G = H / Hb;
  const float* ab = a + (int64_t(b) * T_ * H + h) * F + f0;  // row r at + r * H * F
  const T* bb = bm + (int64_t(b) * T_ * Hb + h / G) * D;      // row r at + r * Hb * D
  const float* divb = div ? div + (int64_t(b) * H + h) * T_ : nullptr;
  const float* wb = w ? w + (int64_t(b) * H + h) * T_ : nullptr;
  float* Sb = S + (int64_t(b) * H + h) * nb * F * D;  // block x at + x F D
  float* zb = z + (int64_t(b) * H + h) * nb * F;
  for (int e = threadIdx.x; e < kScanCols * D; e += kThreads) acc[(e / D) * ldd + e % D] = 0.f;
  if (threadIdx.x < kScanCols) accz[threadIdx.x] = 0.f;

  for (int step = 0; step < nb; step++) {
    const int x = reverse ? nb - 1 - step : step;
    __syncthreads();  // the running sums are complete
    for (int e = threadIdx.x; e < nf * D; e += kThreads)
      Sb[int64_t(x) * F * D + int64_t(f0 + e / D) * D + e % D] = acc[(e / D) * ldd + e % D];
    if (threadIdx.x < nf) zb[int64_t(x) * F + f0 + threadIdx.x] = accz[threadIdx.x];
    const int u = reverse ? x + 1 : x - 1;  // the block that becomes visible to block x -/+ 1
    if (u < 0 || u >= nb) continue;
    const int u0 = u * kBlock, rows = imin(kBlock, T_ - u0);
    for (int e = threadIdx.x; e < kBlock * kScanCols; e += kThreads) {
      int r = e / kScanCols, f = e % kScanCols;
      sa[r * lda + f] = r < rows && f < nf ? ab[int64_t(u0 + r) * H * F + f] : 0.f;
    }
    load_tile(sb, ldd, bb + int64_t(u0) * Hb * D, int64_t(Hb) * D, kBlock, rows, D, divb ? divb + u0 : nullptr);
    if (threadIdx.x < kBlock) sw[threadIdx.x] = threadIdx.x < rows ? (wb ? wb[u0 + threadIdx.x] : 1.f) : 0.f;
    __syncthreads();
    for (int e = threadIdx.x; e < kScanCols * D; e += kThreads) {
      int f = e / D, d = e % D;
      float s = 0.f;
      for (int r = 0; r < kBlock; r++) s = fmaf(sa[r * lda + f], sb[r * ldd + d], s);
      acc[f * ldd + d] += s;
    }
    if (threadIdx.x < kScanCols) {
      float s = 0.f;
      for (int r = 0; r < kBlock; r++) s = fmaf(sa[r * lda + threadIdx.x], sw[r], s);
      accz[threadIdx.x] += s;
    }
  }
}

// ---- forward --------------------------------------------------------------------------------------
// grid (H, B, ceil(T_ / kRows)): queries [i0, i0 + kRows) of one (b, h), which see the local keys
// [j0, i0 + rows) (blocks t - 1 and t) and, from block t >= 2 on, the state S[t], z[t].
template <typename T, int kRows, int kCols>
__global__ void __launch_bounds__(kThreads)
    hybrid_forward_kernel(T* y, float* Z, const T* q, const T* k, const T* v, const float* phiq,
                          const float* phik, const float* wlogit, const float* S, const float* zs, int T_,
                          int H, int Hkv, int D, int F, HybridVariant variant) {
  static_assert(tile_ok(kRows, kCols), "a tile this kernel cannot take");
  EXTERN_SHARED(float, smem);
  const int ldd = D + 1, ldf = F + 1, ldc = kCols + 1;
  SharedBump sm{smem};
  float* sq = sm.take(kRows * ldd);   // (kRows, D) queries
  float* spq = sm.take(kRows * ldf);  // (kRows, F) their features
  float* sk = sm.take(kCols * ldd);   // (kCols, D) key tile; later a tile of S
  float* sv = sm.take(kCols * ldd);   // (kCols, D) value tile; later a slice of z
  float* spk = sm.take(kCols * ldf);  // (kCols, F) key features
  float* sw = sm.take(kRows * ldc);   // (kRows, kCols) pair weights (scores in the max pass)
  float* acc = sm.take(kRows * ldd);  // (kRows, D) numerators
  float* rmax = sm.take(kRows);       // window max m_i
  float* rden = sm.take(kRows);       // normaliser Z_i
  int* rarg = reinterpret_cast<int*>(sm.take(kRows));  // (the window's argmax: unused here)

  const int h = blockIdx.x, b = blockIdx.y, i0 = blockIdx.z * kRows, rows = imin(kRows, T_ - i0);
  const int hk = h / (H / Hkv), t = i0 / kBlock, nb = ceil_div(T_, kBlock);
  const int j0 = imax(0, (t - 1) * kBlock), kend = i0 + rows;
  const float scale = 1.f / sqrtf(float(D)), g = sigmoidf(wlogit[h]);
  const int64_t qs = int64_t(H) * D, ks = int64_t(Hkv) * D, fs = int64_t(H) * F;
  const T* kb = k + (int64_t(b) * T_ * Hkv + hk) * D;  // key j at + j ks
  const T* vb = v + (int64_t(b) * T_ * Hkv + hk) * D;
  const float* pkb = phik + (int64_t(b) * T_ * H + h) * F;  // key j at + j fs

  load_tile(sq, ldd, q + ((int64_t(b) * T_ + i0) * H + h) * D, qs, kRows, rows, D);
  load_tile(spq, ldf, phiq + ((int64_t(b) * T_ + i0) * H + h) * F, fs, kRows, rows, F);
  for (int e = threadIdx.x; e < kRows * D; e += kThreads) acc[(e / D) * ldd + e % D] = 0.f;
  if (threadIdx.x < kRows) rmax[threadIdx.x] = -INFINITY, rden[threadIdx.x] = 0.f, rarg[threadIdx.x] = -1;

  // 1. The window max (scores only).
  window_max<kRows, kCols>(rmax, rarg, sq, sk, sw, kb, ks, i0, rows, j0, kend, D, scale, variant);
  // 2. The local pairs: A = g exp(s - m) in the window, phi_q . phi_k for local linear pairs.
  for (int kt = j0; kt < kend; kt += kCols) {
    const int nk = imin(kCols, kend - kt);
    __syncthreads();
    load_key_tile<kCols>(sk, sv, spk, kb, vb, pkb, ks, fs, kt, nk, D, F);
    __syncthreads();
    for (int e = threadIdx.x; e < kRows * kCols; e += kThreads) {
      int r = e / kCols, c = e % kCols;
      PairKind kind = r < rows && c < nk ? pair_kind(i0 + r, kt + c, variant) : PairKind::none;
      sw[r * ldc + c] = pair_weight(kind, sq + r * ldd, sk + c * ldd, spq + r * ldf, spk + c * ldf, D, F, scale, g,
                                    rmax[r]);
    }
    __syncthreads();
    if (threadIdx.x < kRows) {
      float s = 0.f;
      for (int c = 0; c < kCols; c++) s += sw[threadIdx.x * ldc + c];
      rden[threadIdx.x] += s;
    }
    for (int e = threadIdx.x; e < kRows * D; e += kThreads) {
      int r = e / D, d = e % D;
      float s = 0.f;
      for (int c = 0; c < kCols; c++) s = fmaf(sw[r * ldc + c], sv[c * ldd + d], s);
      acc[r * ldd + d] += s;
    }
  }
  // 3. Keys of blocks <= t - 2, through the state: num += phi_q S[t], den += phi_q . z[t].
  if (t >= 2) {
    const float* St = S + ((int64_t(b) * H + h) * nb + t) * F * D;
    const float* zt = zs + ((int64_t(b) * H + h) * nb + t) * F;
    for (int f0 = 0; f0 < F; f0 += kCols) {
      const int nf = imin(kCols, F - f0);
      __syncthreads();
      load_tile(sk, ldd, St + int64_t(f0) * D, D, kCols, nf, D);
      if (threadIdx.x < kCols) sv[threadIdx.x] = threadIdx.x < nf ? zt[f0 + threadIdx.x] : 0.f;
      __syncthreads();
      if (threadIdx.x < kRows) {
        float s = 0.f;
        for (int f = 0; f < nf; f++) s = fmaf(spq[threadIdx.x * ldf + f0 + f], sv[f], s);
        rden[threadIdx.x] += s;
      }
      for (int e = threadIdx.x; e < kRows * D; e += kThreads) {
        int r = e / D, d = e % D;
        float s = 0.f;
        for (int f = 0; f < nf; f++) s = fmaf(spq[r * ldf + f0 + f], sk[f * ldd + d], s);
        acc[r * ldd + d] += s;
      }
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < rows * D; e += kThreads) {
    int r = e / D, d = e % D;
    y[((int64_t(b) * T_ + i0 + r) * H + h) * D + d] = from_f32<T>(acc[r * ldd + d] / rden[r]);
  }
  if (threadIdx.x < rows) Z[(int64_t(b) * H + h) * T_ + i0 + threadIdx.x] = rden[threadIdx.x];
}

// ---- backward: queries -----------------------------------------------------------------------------
// grid (H, B, ceil(T_ / kRows)): dq and dphi_q of queries [i0, i0 + kRows) of one (b, h). With
// dN_i = dy_i / Z_i, dZ_i = -(dy_i . y_i) / Z_i and, for each local pair, dw_ij = dN_i . v_j + dZ_i:
//   window pairs:  ds_ij = dw_ij A_ij;  wsum_i = sum_j ds_ij;  dq_i = scale (sum_j ds_ij k_j - wsum_i k_argmax)
//   linear pairs:  dphi_q(i) += dw_ij phi_k(j);   state: dphi_q(i) += S[t] dN_i + z[t] dZ_i
// Saves per row m, argmax, dZ, wsum (B, H, T_) for the key kernel, and sum_i wsum_i (1 - g) of its
// rows to part[(b H + h) gridDim.z + blockIdx.z] (the window factor's gradient, summed later).
template <typename T, int kRows, int kCols>
__global__ void __launch_bounds__(kThreads)
    hybrid_backward_query_kernel(T* dq, float* dphiq, float* row_m, int* row_arg, float* row_dz,
                                 float* row_wsum, float* part, const T* dy, const T* y, const float* Z,
                                 const T* q, const T* k, const T* v, const float* phiq, const float* phik,
                                 const float* wlogit, const float* S, const float* zs, int T_, int H,
                                 int Hkv, int D, int F, HybridVariant variant) {
  static_assert(tile_ok(kRows, kCols), "a tile this kernel cannot take");
  EXTERN_SHARED(float, smem);
  const int ldd = D + 1, ldf = F + 1, ldc = kCols + 1;
  SharedBump sm{smem};
  float* sq = sm.take(kRows * ldd);    // (kRows, D) queries
  float* sdn = sm.take(kRows * ldd);   // (kRows, D) dN
  float* spq = sm.take(kRows * ldf);   // (kRows, F) query features
  float* sk = sm.take(kCols * ldd);    // (kCols, D) key tile; later a tile of S
  float* sv = sm.take(kCols * ldd);    // (kCols, D) value tile; later a slice of z
  float* spk = sm.take(kCols * ldf);   // (kCols, F) key features
  float* sds = sm.take(kRows * ldc);   // (kRows, kCols) ds (window pairs) or dw (linear pairs); scores first
  float* adq = sm.take(kRows * ldd);   // (kRows, D) dq / scale
  float* adpq = sm.take(kRows * ldf);  // (kRows, F) dphi_q
  float* rmax = sm.take(kRows);
  float* rdz = sm.take(kRows);
  float* rsum = sm.take(kRows);
  float* rz = sm.take(kRows);
  int* rarg = reinterpret_cast<int*>(sm.take(kRows));

  const int h = blockIdx.x, b = blockIdx.y, i0 = blockIdx.z * kRows, rows = imin(kRows, T_ - i0);
  const int hk = h / (H / Hkv), t = i0 / kBlock, nb = ceil_div(T_, kBlock);
  const int j0 = imax(0, (t - 1) * kBlock), kend = i0 + rows;
  const float scale = 1.f / sqrtf(float(D)), g = sigmoidf(wlogit[h]);
  const int64_t qs = int64_t(H) * D, ks = int64_t(Hkv) * D, fs = int64_t(H) * F;
  const int64_t first = (int64_t(b) * T_ + i0) * H + h;  // row i0 of (b, h), in rows of the (B, T_, H) grid
  const T* kb = k + (int64_t(b) * T_ * Hkv + hk) * D;
  const T* vb = v + (int64_t(b) * T_ * Hkv + hk) * D;
  const float* pkb = phik + (int64_t(b) * T_ * H + h) * F;
  const int64_t stat = (int64_t(b) * H + h) * T_ + i0;  // row i0 in the (B, H, T_) statistics

  if (threadIdx.x < kRows) {
    int r = threadIdx.x;
    rz[r] = r < rows ? Z[stat + r] : 1.f;
    rmax[r] = -INFINITY, rsum[r] = 0.f, rarg[r] = -1, rdz[r] = 0.f;
  }
  __syncthreads();
  load_tile(sq, ldd, q + first * D, qs, kRows, rows, D);
  load_tile(sdn, ldd, dy + first * D, qs, kRows, rows, D, rz);
  load_tile(spq, ldf, phiq + first * F, fs, kRows, rows, F);
  for (int e = threadIdx.x; e < kRows * D; e += kThreads) adq[(e / D) * ldd + e % D] = 0.f;
  for (int e = threadIdx.x; e < kRows * F; e += kThreads) adpq[(e / F) * ldf + e % F] = 0.f;
  __syncthreads();
  if (threadIdx.x < rows) {  // dZ_i = -(dN_i . y_i)
    int r = threadIdx.x;
    const T* yr = y + (first + int64_t(r) * H) * D;
    float s = 0.f;
    for (int d = 0; d < D; d++) s = fmaf(sdn[r * ldd + d], to_f32(yr[d]), s);
    rdz[r] = -s;
  }
  // 1. The window max and its (first) argmax.
  window_max<kRows, kCols>(rmax, rarg, sq, sk, sds, kb, ks, i0, rows, j0, kend, D, scale, variant);
  // 2. The local pairs.
  for (int kt = j0; kt < kend; kt += kCols) {
    const int nk = imin(kCols, kend - kt);
    __syncthreads();
    load_key_tile<kCols>(sk, sv, spk, kb, vb, pkb, ks, fs, kt, nk, D, F);
    __syncthreads();
    for (int e = threadIdx.x; e < kRows * kCols; e += kThreads) {
      int r = e / kCols, c = e % kCols;
      PairKind kind = r < rows && c < nk ? pair_kind(i0 + r, kt + c, variant) : PairKind::none;
      float val = 0.f;
      if (kind != PairKind::none) {
        float dw = dot(sdn + r * ldd, sv + c * ldd, D) + rdz[r];
        // linear pairs: dw (for dphi_q); window pairs: ds = dw A
        val = kind == PairKind::linear ? dw
                              : dw * pair_weight(kind, sq + r * ldd, sk + c * ldd, spq + r * ldf, spk + c * ldf, D, F,
                                                 scale, g, rmax[r]);
      }
      sds[r * ldc + c] = val;
    }
    __syncthreads();
    if (threadIdx.x < rows)
      for (int c = 0; c < nk; c++)
        if (pair_kind(i0 + threadIdx.x, kt + c, variant) == PairKind::window) rsum[threadIdx.x] += sds[threadIdx.x * ldc + c];
    for (int e = threadIdx.x; e < kRows * D; e += kThreads) {
      int r = e / D, d = e % D;
      float s = 0.f;
      for (int c = 0; c < nk; c++)
        if (pair_kind(i0 + r, kt + c, variant) == PairKind::window) s = fmaf(sds[r * ldc + c], sk[c * ldd + d], s);
      adq[r * ldd + d] += s;
    }
    for (int e = threadIdx.x; e < kRows * F; e += kThreads) {
      int r = e / F, f = e % F;
      float s = 0.f;
      for (int c = 0; c < nk; c++)
        if (pair_kind(i0 + r, kt + c, variant) == PairKind::linear) s = fmaf(sds[r * ldc + c], spk[c * ldf + f], s);
      adpq[r * ldf + f] += s;
    }
  }
  __syncthreads();
  // The max moves every window score of its row: ds(i, argmax_i) -= wsum_i.
  for (int e = threadIdx.x; e < rows * D; e += kThreads) {
    int r = e / D, d = e % D;
    if (rarg[r] >= 0) adq[r * ldd + d] -= rsum[r] * to_f32(kb[int64_t(rarg[r]) * ks + d]);
  }
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int r = 0; r < rows; r++) s += rsum[r];
    part[(int64_t(b) * H + h) * gridDim.z + blockIdx.z] = s * (1.f - g);
  }
  // 3. The state: dphi_q(i) += S[t] dN_i + z[t] dZ_i.
  if (t >= 2) {
    const float* St = S + ((int64_t(b) * H + h) * nb + t) * F * D;
    const float* zt = zs + ((int64_t(b) * H + h) * nb + t) * F;
    for (int f0 = 0; f0 < F; f0 += kCols) {
      const int nf = imin(kCols, F - f0);
      __syncthreads();
      load_tile(sk, ldd, St + int64_t(f0) * D, D, kCols, nf, D);
      if (threadIdx.x < kCols) sv[threadIdx.x] = threadIdx.x < nf ? zt[f0 + threadIdx.x] : 0.f;
      __syncthreads();
      for (int e = threadIdx.x; e < kRows * nf; e += kThreads) {
        int r = e / nf, f = e % nf;
        adpq[r * ldf + f0 + f] += dot(sdn + r * ldd, sk + f * ldd, D) + rdz[r] * sv[f];
      }
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < rows * D; e += kThreads) {
    int r = e / D, d = e % D;
    if (dq) dq[(first + int64_t(r) * H) * D + d] = from_f32<T>(scale * adq[r * ldd + d]);
  }
  for (int e = threadIdx.x; e < rows * F; e += kThreads) {
    int r = e / F, f = e % F;
    if (dphiq) dphiq[(first + int64_t(r) * H) * F + f] = adpq[r * ldf + f];
  }
  if (threadIdx.x < rows) {
    int r = threadIdx.x;
    row_m[stat + r] = rmax[r], row_arg[stat + r] = rarg[r], row_dz[stat + r] = rdz[r], row_wsum[stat + r] = rsum[r];
  }
}

// ---- backward: keys -------------------------------------------------------------------------------
// grid (Hkv, B, ceil(T_ / kRows)): dk, dv of keys [j0, j0 + kRows) of one (b, key head), and dphi_k of
// those keys for each query head h of the group in turn. Key j of block u is seen locally by the
// queries of blocks u and u + 1 (from j on), and through the state by blocks >= u + 2, whose sum
// is P[u], p[u] (the reverse scan):
//   window pairs: ds_ij = dw_ij A_ij - [j = argmax_i] wsum_i;  dk_j += scale ds_ij q_i
//   every pair:   dv_j += w_ij dN_i;   linear pairs: dphi_k(j) += dw_ij phi_q(i)
//   state:        dphi_k(j) += P[u] v_j + p[u];   dv_j += P[u]^T phi_k(j)
template <typename T, int kRows, int kCols>
__global__ void __launch_bounds__(kThreads)
    hybrid_backward_key_kernel(T* dk, T* dv, float* dphik, const T* dy, const float* Z, const T* q,
                               const T* k, const T* v, const float* phiq, const float* phik,
                               const float* wlogit, const float* row_m, const int* row_arg,
                               const float* row_dz, const float* row_wsum, const float* P, const float* p,
                               int T_, int H, int Hkv, int D, int F, HybridVariant variant) {
  static_assert(tile_ok(kRows, kCols), "a tile this kernel cannot take");
  EXTERN_SHARED(float, smem);
  const int ldd = D + 1, ldf = F + 1, ldc = kCols + 1;
  SharedBump sm{smem};
  float* sk = sm.take(kRows * ldd);    // (kRows, D) keys
  float* sv = sm.take(kRows * ldd);    // (kRows, D) values
  float* spk = sm.take(kRows * ldf);   // (kRows, F) key features of head h
  float* adk = sm.take(kRows * ldd);   // (kRows, D) dk / scale
  float* adv = sm.take(kRows * ldd);   // (kRows, D) dv
  float* adpk = sm.take(kRows * ldf);  // (kRows, F) dphi_k of head h
  float* sq = sm.take(kCols * ldd);    // (kCols, D) query tile; later a tile of P
  float* sdn = sm.take(kCols * ldd);   // (kCols, D) dN of the query tile
  float* spq = sm.take(kCols * ldf);   // (kCols, F) query features
  float* sw = sm.take(kRows * ldc);    // (kRows keys, kCols queries) w_ij
  float* sds = sm.take(kRows * ldc);   // (kRows keys, kCols queries) ds_ij (window) or dw_ij (linear)
  float* qm = sm.take(kCols);          // the query tile's m, dZ, wsum, argmax; later a slice of p
  float* qdz = sm.take(kCols);
  float* qsum = sm.take(kCols);
  float* qz = sm.take(kCols);
  int* qarg = reinterpret_cast<int*>(sm.take(kCols));

  const int hk = blockIdx.x, b = blockIdx.y, j0 = blockIdx.z * kRows, nk = imin(kRows, T_ - j0);
  const int G = H / Hkv, u = j0 / kBlock, nb = ceil_div(T_, kBlock), qend = imin(T_, (u + 2) * kBlock);
  const float scale = 1.f / sqrtf(float(D));
  const int64_t qs = int64_t(H) * D, ks = int64_t(Hkv) * D, fs = int64_t(H) * F;
  const int64_t kfirst = (int64_t(b) * T_ + j0) * Hkv + hk;  // key j0 of (b, hk), in rows of (B, T_, Hkv)

  load_tile(sk, ldd, k + kfirst * D, ks, kRows, nk, D);
  load_tile(sv, ldd, v + kfirst * D, ks, kRows, nk, D);
  for (int e = threadIdx.x; e < kRows * D; e += kThreads) adk[(e / D) * ldd + e % D] = adv[(e / D) * ldd + e % D] = 0.f;
  for (int h = hk * G; h < (hk + 1) * G; h++) {
    const float g = sigmoidf(wlogit[h]);
    const int64_t stat = (int64_t(b) * H + h) * T_;
    __syncthreads();  // the previous head's dphi_k is stored
    load_tile(spk, ldf, phik + ((int64_t(b) * T_ + j0) * H + h) * F, fs, kRows, nk, F);
    for (int e = threadIdx.x; e < kRows * F; e += kThreads) adpk[(e / F) * ldf + e % F] = 0.f;
    // 1. The queries that see these keys locally.
    for (int qt = j0; qt < qend; qt += kCols) {
      const int nq = imin(kCols, qend - qt);
      const int64_t qfirst = (int64_t(b) * T_ + qt) * H + h;
      __syncthreads();
      if (threadIdx.x < kCols) {
        int r = threadIdx.x;
        bool in = r < nq;
        qm[r] = in ? row_m[stat + qt + r] : 0.f;
        qdz[r] = in ? row_dz[stat + qt + r] : 0.f;
        qsum[r] = in ? row_wsum[stat + qt + r] : 0.f;
        qz[r] = in ? Z[stat + qt + r] : 1.f;
        qarg[r] = in ? row_arg[stat + qt + r] : -1;
      }
      __syncthreads();
      load_tile(sq, ldd, q + qfirst * D, qs, kCols, nq, D);
      load_tile(sdn, ldd, dy + qfirst * D, qs, kCols, nq, D, qz);
      load_tile(spq, ldf, phiq + qfirst * F, fs, kCols, nq, F);
      __syncthreads();
      for (int e = threadIdx.x; e < kRows * kCols; e += kThreads) {
        int c = e / kCols, r = e % kCols, i = qt + r, j = j0 + c;  // key c, query r
        PairKind kind = c < nk && r < nq ? pair_kind(i, j, variant) : PairKind::none;
        float w = 0.f, val = 0.f;
        if (kind != PairKind::none) {
          float dw = dot(sdn + r * ldd, sv + c * ldd, D) + qdz[r];
          w = pair_weight(kind, sq + r * ldd, sk + c * ldd, spq + r * ldf, spk + c * ldf, D, F, scale, g, qm[r]);
          val = kind == PairKind::window ? dw * w - (j == qarg[r] ? qsum[r] : 0.f) : dw;
        }
        sw[c * ldc + r] = w;
        sds[c * ldc + r] = val;
      }
      __syncthreads();
      for (int e = threadIdx.x; e < kRows * D; e += kThreads) {
        int c = e / D, d = e % D;
        float sv_ = 0.f, sk_ = 0.f;
        for (int r = 0; r < nq; r++) {
          sv_ = fmaf(sw[c * ldc + r], sdn[r * ldd + d], sv_);
          if (pair_kind(qt + r, j0 + c, variant) == PairKind::window) sk_ = fmaf(sds[c * ldc + r], sq[r * ldd + d], sk_);
        }
        adv[c * ldd + d] += sv_;
        adk[c * ldd + d] += sk_;
      }
      for (int e = threadIdx.x; e < kRows * F; e += kThreads) {
        int c = e / F, f = e % F;
        float s = 0.f;
        for (int r = 0; r < nq; r++)
          if (pair_kind(qt + r, j0 + c, variant) == PairKind::linear) s = fmaf(sds[c * ldc + r], spq[r * ldf + f], s);
        adpk[c * ldf + f] += s;
      }
    }
    // 2. The queries that see them through the state.
    if (u + 2 < nb) {
      const float* Pu = P + ((int64_t(b) * H + h) * nb + u) * F * D;
      const float* pu = p + ((int64_t(b) * H + h) * nb + u) * F;
      for (int f0 = 0; f0 < F; f0 += kCols) {
        const int nf = imin(kCols, F - f0);
        __syncthreads();
        load_tile(sq, ldd, Pu + int64_t(f0) * D, D, kCols, nf, D);
        if (threadIdx.x < kCols) qm[threadIdx.x] = threadIdx.x < nf ? pu[f0 + threadIdx.x] : 0.f;
        __syncthreads();
        for (int e = threadIdx.x; e < kRows * nf; e += kThreads) {
          int c = e / nf, f = e % nf;
          adpk[c * ldf + f0 + f] += dot(sv + c * ldd, sq + f * ldd, D) + qm[f];
        }
        for (int e = threadIdx.x; e < kRows * D; e += kThreads) {
          int c = e / D, d = e % D;
          float s = 0.f;
          for (int f = 0; f < nf; f++) s = fmaf(spk[c * ldf + f0 + f], sq[f * ldd + d], s);
          adv[c * ldd + d] += s;
        }
      }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nk * F; e += kThreads) {
      int c = e / F, f = e % F;
      if (dphik) dphik[((int64_t(b) * T_ + j0 + c) * H + h) * F + f] = adpk[c * ldf + f];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < nk * D; e += kThreads) {
    int c = e / D, d = e % D;
    if (dk) dk[(kfirst + int64_t(c) * Hkv) * D + d] = from_f32<T>(scale * adk[c * ldd + d]);
    if (dv) dv[(kfirst + int64_t(c) * Hkv) * D + d] = from_f32<T>(adv[c * ldd + d]);
  }
}

// dwlogit[h] += the partials of head h, batch by batch and block by block (a fixed order).
__global__ void sum_partials_kernel(float* dwlogit, const float* part, int B, int H, int n) {
  for (int h = threadIdx.x; h < H; h += blockDim.x) {
    float s = 0.f;
    for (int b = 0; b < B; b++)
      for (int x = 0; x < n; x++) s += part[(int64_t(b) * H + h) * n + x];
    dwlogit[h] += s;
  }
}

// ---- launchers ------------------------------------------------------------------------------------
// Shared bytes of each kernel with a tile of kRows x kCols, in the order of its SharedBump takes.
size_t scan_shared(int D) {
  return sizeof(float) * (kBlock * (kScanCols + 1) + kBlock * (D + 1) + kBlock + kScanCols * (D + 1) + kScanCols);
}
size_t forward_shared(int D, int F, int kRows, int kCols) {
  return sizeof(float) * (kRows * (D + 1) + kRows * (F + 1) + 2 * kCols * (D + 1) + kCols * (F + 1) +
                          kRows * (kCols + 1) + kRows * (D + 1) + 3 * kRows);
}
size_t query_shared(int D, int F, int kRows, int kCols) {
  return sizeof(float) * (2 * kRows * (D + 1) + kRows * (F + 1) + 2 * kCols * (D + 1) + kCols * (F + 1) +
                          kRows * (kCols + 1) + kRows * (D + 1) + kRows * (F + 1) + 5 * kRows);
}
size_t key_shared(int D, int F, int kRows, int kCols) {
  return sizeof(float) * (4 * kRows * (D + 1) + 2 * kRows * (F + 1) + 2 * kCols * (D + 1) + kCols * (F + 1) +
                          2 * kRows * (kCols + 1) + 5 * kCols);
}

// The tile of each kernel on the current device: the largest of kHybridTiles that fits. At D = 128,
// F = 256 (the most shared memory) sm_90 takes 32 x 32 for all three; sm_80 32 x 32, 16 x 32,
// 16 x 32; sm_86/89 16 x 32, 16 x 16, 16 x 16 (the key kernel's 16 x 16 needs exactly 99 KiB).
KernelTile scan_tile(int D) {
  const KernelTile only[] = {{kBlock, kScanCols}};
  return choose_tile("hybrid attention state scan", only, [&](int, int) { return scan_shared(D); });
}
KernelTile forward_tile(int D, int F) {
  return choose_tile("hybrid_attention_forward", kHybridTiles, [&](int r, int c) { return forward_shared(D, F, r, c); });
}
KernelTile query_tile(int D, int F) {
  return choose_tile("hybrid_attention_backward (queries)", kHybridTiles,
                     [&](int r, int c) { return query_shared(D, F, r, c); });
}
KernelTile key_tile(int D, int F) {
  return choose_tile("hybrid_attention_backward (keys)", kHybridTiles,
                     [&](int r, int c) { return key_shared(D, F, r, c); });
}

// Calls launch(rows, cols) with the tile t (one of kHybridTiles) as std::integral_constants, so
// that the launch names the kernel instance compiled for it.
template <typename Launch>
void with_tile(const KernelTile& t, Launch&& launch) {
  using std::integral_constant;
  if (t.rows == 32 && t.cols == 32) return launch(integral_constant<int, 32>{}, integral_constant<int, 32>{});
  if (t.rows == 16 && t.cols == 32) return launch(integral_constant<int, 16>{}, integral_constant<int, 32>{});
  ENSURE(t.rows == 16 && t.cols == 16, "hybrid attention (cuda): no kernel compiled for the tile %d x %d", t.rows,
         t.cols);
  launch(integral_constant<int, 16>{}, integral_constant<int, 16>{});
}

void check_sizes(const char* op, int B, int T_, int H, int Hkv, int D, int F) {
  ENSURE(B >= 0 && T_ >= 0 && H > 0 && Hkv > 0 && H % Hkv == 0,
         "%s (cuda): bad sizes B = %d, T = %d, H = %d, Hkv = %d", op, B, T_, H, Hkv);
  ENSURE(D >= 1 && D <= 128 && F >= 1 && F <= 256,
         "%s (cuda): head size %d (1..128) or feature count %d (1..256) out of range", op, D, F);
}

// The state scan (forward: S[x], z[x] of every block of every (b, h); reverse: P[u], p[u]).
template <typename T>
void state_scan(float* S, float* z, const float* a, const T* bm, const float* div, const float* w, int B, int T_,
                int H, int Hb, int D, int F, bool reverse, Stream stream) {
  const KernelTile tile = scan_tile(D);
  auto* kernel = state_scan_kernel<T>;
  allow_shared(kernel, tile.shared_bytes);
  launch_kernel(kernel, dim3(H, B, ceil_div(F, kScanCols)), kThreads, tile.shared_bytes, stream, S, z, a, bm, div, w,
                T_, H, Hb, D, F, reverse);
}

// The forward state S[x], z[x] of every block of every (b, h).
template <typename T>
void forward_states(float* S, float* z, const float* phik, const T* v, int B, int T_, int H, int Hkv, int D, int F,
                    Stream stream) {
  const float* none = nullptr;  // no divisor, weights 1
  state_scan(S, z, phik, v, none, none, B, T_, H, Hkv, D, F, false, stream);
}

}  // namespace

HybridAttentionTiles hybrid_attention_tiles(int D, int F) {
  check_sizes("hybrid_attention_tiles", 1, 1, 1, 1, D, F);
  return {scan_tile(D), forward_tile(D, F), query_tile(D, F), key_tile(D, F)};
}

template <typename T>
void hybrid_attention_forward(T* y, float* Z, const T* q, const T* k, const T* v, const float* phiq,
                              const float* phik, const float* wlogit, int B, int T_, int H, int Hkv, int D,
                              int F, HybridVariant variant, Stream stream) {
  check_sizes("hybrid_attention_forward", B, T_, H, Hkv, D, F);
  if (B == 0 || T_ == 0) return;
  const KernelTile tile = forward_tile(D, F);  // first: a card too small fails before any work
  const int nb = ceil_div(T_, kBlock);
  DeviceScratch<float> S(size_t(B) * H * nb * F * D, stream), z(size_t(B) * H * nb * F, stream);
  forward_states(S.p, z.p, phik, v, B, T_, H, Hkv, D, F, stream);
  const float *Sp = S.p, *zp = z.p;
  with_tile(tile, [&](auto rows, auto cols) {
    constexpr int R = decltype(rows)::value, C = decltype(cols)::value;
    auto* kernel = hybrid_forward_kernel<T, R, C>;
    allow_shared(kernel, tile.shared_bytes);
    launch_kernel(kernel, dim3(H, B, ceil_div(T_, R)), kThreads, tile.shared_bytes, stream, y, Z, q, k, v, phiq,
                  phik, wlogit, Sp, zp, T_, H, Hkv, D, F, variant);
  });
}

template <typename T>
void hybrid_attention_backward(T* dq, T* dk, T* dv, float* dphiq, float* dphik, float* dwlogit, const T* dy,
                               const T* y, const float* Z, const T* q, const T* k, const T* v,
                               const float* phiq, const float* phik, const float* wlogit, int B, int T_, int H,
                               int Hkv, int D, int F, HybridVariant variant, Stream stream) {
  check_sizes("hybrid_attention_backward", B, T_, H, Hkv, D, F);
  if (B == 0 || T_ == 0) return;
  const KernelTile qtile = query_tile(D, F), ktile = key_tile(D, F);
  const int nb = ceil_div(T_, kBlock), nq = ceil_div(T_, qtile.rows);  // nq: query thread blocks per (b, h)
  const size_t rows = size_t(B) * H * T_;
  DeviceScratch<float> S(size_t(B) * H * nb * F * D, stream), z(size_t(B) * H * nb * F, stream);
  DeviceScratch<float> row_m(rows, stream), row_dz(rows, stream), row_wsum(rows, stream), part(size_t(B) * H * nq, stream);
  DeviceScratch<int> row_arg(rows, stream);
  forward_states(S.p, z.p, phik, v, B, T_, H, Hkv, D, F, stream);

  const float *Sp = S.p, *zp = z.p;
  with_tile(qtile, [&](auto rows_, auto cols_) {
    constexpr int R = decltype(rows_)::value, C = decltype(cols_)::value;
    auto* query_kernel = hybrid_backward_query_kernel<T, R, C>;
    allow_shared(query_kernel, qtile.shared_bytes);
    launch_kernel(query_kernel, dim3(H, B, nq), kThreads, qtile.shared_bytes, stream, dq, dphiq, row_m.p, row_arg.p,
                  row_dz.p, row_wsum.p, part.p, dy, y, Z, q, k, v, phiq, phik, wlogit, Sp, zp, T_, H, Hkv, D, F,
                  variant);
  });
  if (dwlogit && variant != HybridVariant::linear) {
    const float* partp = part.p;
    launch_kernel(sum_partials_kernel, 1, 64, 0, stream, dwlogit, partp, B, H, nq);
  }

  // The reverse scan reuses S, z as P, p: sums of phi_q dN^T and phi_q dZ over blocks >= u + 2.
  state_scan(S.p, z.p, phiq, dy, Z, row_dz.p, B, T_, H, H, D, F, true, stream);

  const float *mp = row_m.p, *dzp = row_dz.p, *wsp = row_wsum.p;
  const int* argp = row_arg.p;
  with_tile(ktile, [&](auto rows_, auto cols_) {
    constexpr int R = decltype(rows_)::value, C = decltype(cols_)::value;
    auto* key_kernel = hybrid_backward_key_kernel<T, R, C>;
    allow_shared(key_kernel, ktile.shared_bytes);
    launch_kernel(key_kernel, dim3(Hkv, B, ceil_div(T_, R)), kThreads, ktile.shared_bytes, stream, dk, dv, dphik, dy,
                  Z, q, k, v, phiq, phik, wlogit, mp, argp, dzp, wsp, Sp, zp, T_, H, Hkv, D, F, variant);
  });
}

#define INSTANTIATE(T)                                                                                       \
  template void hybrid_attention_forward<T>(T*, float*, const T*, const T*, const T*, const float*,         \
                                            const float*, const float*, int, int, int, int, int, int,       \
                                            HybridVariant, Stream);                                         \
  template void hybrid_attention_backward<T>(T*, T*, T*, float*, float*, float*, const T*, const T*,        \
                                             const float*, const T*, const T*, const T*, const float*,      \
                                             const float*, const float*, int, int, int, int, int, int,      \
                                             HybridVariant, Stream);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace lolcats::cuda
