// Causal GQA softmax attention, FlashAttention-style: kernels, then launchers. The math, layouts
// and tiling are in cuda/attention.h; the backward's derivation in tensor/attention.h.
//
// One thread layout serves every kernel: a block owns kRows = 64 "rows" (queries in the forward
// and dq kernels, keys in the dk/dv kernel), 4 threads per row: thread (r, sub) = (tid / 4, tid % 4).
// A streamed tile holds `cols` columns (keys, or queries). Two helpers do all the arithmetic:
//   row_dots:       this thread's scores  s[c] = a_r . b_{sub + 4c}  (columns sub, sub+4, ...)
//   row_accumulate: this thread's outputs out += sum_c p_rc x_c       (columns 4 (sub + 4k) .. +3)
// The 4 threads of a row are neighbouring lanes of one warp: row statistics (max, sum) combine with
// two xor shuffles. This is the portable scalar-FMA version (f32 FMAs fed from shared memory);
// a tensor-core version may come beside it, tested against it.
//
// Measured on an H200 (bf16, Llama 3 8B heads, B=4, T=1024): forward 2.45 ms (14 TFLOP/s, about a
// fifth of the f32 FMA peak), backward 9.0 ms; the same with f32 storage (compute-bound).
//
// Shared memory rows are padded by 4 floats, so that the float4 reads of 8 neighbouring rows (or 4
// neighbouring columns) by one warp fall on distinct banks.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/attention.h"
#include "cuda/common.cuh"
#include "cuda/shared_limit.cuh"

#ifdef __CUDACC__
#define ATTN_UNROLL _Pragma("unroll")
#else
#define ATTN_UNROLL
#endif

namespace lolcats::cuda {
namespace {

constexpr int kRows = 64;                           // rows per block
constexpr int kThreads = 4 * kRows;                 // 4 threads per row
constexpr unsigned kFullMask = 0xffffffffu;

// Columns streamed per step: the full tile where the card's shared memory allows it (sm_80, sm_90),
// half of it where not (sm_86/89's 99 KiB: the backward at D = 64 and 128). Both are compiled; the
// launchers take the first that fits (cuda/shared_limit.cuh). Half a tile only splits a step in two.
template <int D>
__host__ __device__ constexpr int full_cols() { return D <= 64 ? 64 : 32; }

template <int D, int Cols = full_cols<D>()>
struct Tile {
  static_assert(Cols % 16 == 0 && Cols <= kThreads, "4 threads per row, 4 columns per float4");
  static constexpr int cols = Cols;                 // columns streamed per step
  static constexpr int ld = D + 4;                  // shared row stride of a (rows, D) tile
  static constexpr int ldp = cols + 4;              // shared row stride of a (kRows, cols) tile
  static constexpr int vecs = D / 16;               // float4 output pieces per thread
};

// ---- loads and stores: 4 values at a time, converted to and from f32 -----------------------------
__device__ inline float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ inline float4 load4(const bf16* p) {
  uint2 raw = *reinterpret_cast<const uint2*>(p);  // bf16 is the high half of an f32
  return make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xffff0000u),
                     __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xffff0000u));
}
__device__ inline void store4(float* p, float4 x) { *reinterpret_cast<float4*>(p) = x; }
__device__ inline unsigned bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16(x)); }
__device__ inline void store4(bf16* p, float4 x) {
  uint2 raw;
  raw.x = bf16_bits(x.x) | (bf16_bits(x.y) << 16);
  raw.y = bf16_bits(x.z) | (bf16_bits(x.w) << 16);
  *reinterpret_cast<uint2*>(p) = raw;
}
__device__ inline int imin(int a, int b) { return a < b ? a : b; }  // (the emulator has no min())
__device__ inline float4 shared4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ inline float4 scaled(float4 x, float s) {
  return make_float4(x.x * s, x.y * s, x.z * s, x.w * s);
}
__device__ inline void fma4(float4& acc, float s, float4 x) {
  acc.x = fmaf(s, x.x, acc.x);
  acc.y = fmaf(s, x.y, acc.y);
  acc.z = fmaf(s, x.z, acc.z);
  acc.w = fmaf(s, x.w, acc.w);
}

// Copies rows [0, rows) of a (rows, D) slice of global memory (row r at src + r * stride) into
// shared memory with row stride Tile<D>::ld, as f32; rows >= valid become zeros. Consecutive threads
// read consecutive 4-value pieces of a row (coalesced).
template <int D, typename T>
__device__ void load_rows(float* dst, const T* src, int64_t stride, int rows, int valid) {
  constexpr int per_row = D / 4;
  for (int e = threadIdx.x; e < rows * per_row; e += kThreads) {
    int r = e / per_row, d = 4 * (e % per_row);
    float4 x = r < valid ? load4(src + r * stride + d) : make_float4(0.f, 0.f, 0.f, 0.f);
    *reinterpret_cast<float4*>(dst + r * Tile<D>::ld + d) = x;
  }
}

// s[c] = a_row . b[sub + 4c] over D, for this thread's columns of the tile b (cols, D).
template <int D, int Cols>
__device__ inline void row_dots(float (&s)[Cols / 4], const float* a_row, const float* b, int sub) {
  constexpr int n = Cols / 4, ld = Tile<D, Cols>::ld;
  ATTN_UNROLL
  for (int c = 0; c < n; c++) s[c] = 0.f;
  for (int d = 0; d < D; d += 4) {
    float4 a = shared4(a_row + d);
    ATTN_UNROLL
    for (int c = 0; c < n; c++) {
      float4 x = shared4(b + (sub + 4 * c) * ld + d);
      s[c] = fmaf(a.x, x.x, s[c]);
      s[c] = fmaf(a.y, x.y, s[c]);
      s[c] = fmaf(a.z, x.z, s[c]);
      s[c] = fmaf(a.w, x.w, s[c]);
    }
  }
}

// out[k] += sum_c p_row[c] x[c][4 (sub + 4k) .. +3]: this thread's output columns, for the
// weights p_row (cols) of its row and the tile x (cols, D).
template <int D, int Cols>
__device__ inline void row_accumulate(float4 (&out)[Tile<D>::vecs], const float* p_row,
                                      const float* x, int sub) {
  constexpr int ld = Tile<D, Cols>::ld;
  for (int c = 0; c < Cols; c += 4) {
    float4 p = shared4(p_row + c);
    const float* xc = x + c * ld + 4 * sub;
    ATTN_UNROLL
    for (int k = 0; k < Tile<D>::vecs; k++) {
      fma4(out[k], p.x, shared4(xc + 16 * k));
      fma4(out[k], p.y, shared4(xc + ld + 16 * k));
      fma4(out[k], p.z, shared4(xc + 2 * ld + 16 * k));
      fma4(out[k], p.w, shared4(xc + 3 * ld + 16 * k));
    }
  }
}

// Sum (or max) over the 4 threads of a row; every one of them gets the same bits.
__device__ inline float row_sum(float x) {
  x += __shfl_xor_sync(kFullMask, x, 1);
  return x + __shfl_xor_sync(kFullMask, x, 2);
}
__device__ inline float row_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFullMask, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFullMask, x, 2));
}

// Stores this thread's output columns of one row (dst: the row's D values), times `mult`.
template <int D, typename T>
__device__ inline void store_row(T* dst, const float4 (&out)[Tile<D>::vecs], float mult, int sub) {
  ATTN_UNROLL
  for (int k = 0; k < Tile<D>::vecs; k++) store4(dst + 4 * (sub + 4 * k), scaled(out[k], mult));
}

// Query tiles are launched last-first: the last tiles see the most keys, so starting them first
// leaves no long causal tail at the end of the grid.
__device__ inline int query_tile_last_first() { return (gridDim.z - 1 - blockIdx.z) * kRows; }

// ---- forward ----------------------------------------------------------------------------------
// grid (H, B, ceil(T_ / kRows)), kThreads threads: one block per 64 queries of one (b, h).
// Shared: queries (kRows, D), key and value tiles (cols, D), probabilities (kRows, cols).
template <typename T, int D, int Cols>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(T* y, float* lse, const T* q, const T* k, const T* v, int T_, int H,
                             int Hkv) {
  using Tl = Tile<D, Cols>;
  constexpr int kCols = Tl::cols, ld = Tl::ld, ldp = Tl::ldp;
  EXTERN_SHARED(float, smem);
  float* sq = smem;               // (kRows, D)
  float* sk = sq + kRows * ld;    // (kCols, D)
  float* sv = sk + kCols * ld;        // (kCols, D)
  float* sp = sv + kCols * ld;        // (kRows, kCols)

  const int h = blockIdx.x, b = blockIdx.y, g = h / (H / Hkv), i0 = query_tile_last_first();
  const int r = threadIdx.x / 4, sub = threadIdx.x % 4, i = i0 + r;
  const int64_t q_stride = int64_t(H) * D, kv_stride = int64_t(Hkv) * D;
  const T* kb = k + (int64_t(b) * T_ * Hkv + g) * D;  // key 0 of this (b, g); key j at + j kv_stride
  const T* vb = v + (int64_t(b) * T_ * Hkv + g) * D;
  const float scale = 1.0f / sqrtf(float(D));

  load_rows<D>(sq, q + ((int64_t(b) * T_ + i0) * H + h) * D, q_stride, kRows, imin(kRows, T_ - i0));
  float m = -INFINITY;      // running max of this row's scores
  float l = 0.f;            // running sum of exp(s - m) over this thread's columns
  float4 acc[Tl::vecs] = {};  // running sum of exp(s - m) v over all columns, this thread's outputs
  const int keys = imin(i0 + kRows, T_);  // this block's rows see keys [0, keys)
  for (int j0 = 0; j0 < keys; j0 += kCols) {
    __syncthreads();  // the previous tile is used up (and the queries are in)
    load_rows<D>(sk, kb + j0 * kv_stride, kv_stride, kCols, imin(kCols, T_ - j0));
    load_rows<D>(sv, vb + j0 * kv_stride, kv_stride, kCols, imin(kCols, T_ - j0));
    __syncthreads();
    float s[kCols / 4];
    row_dots<D, kCols>(s, sq + r * ld, sk, sub);
    float tile_max = -INFINITY;
    ATTN_UNROLL
    for (int c = 0; c < kCols / 4; c++) {
      int j = j0 + sub + 4 * c;
      s[c] = j <= i && i < T_ ? s[c] * scale : -INFINITY;
      tile_max = fmaxf(tile_max, s[c]);
    }
    const float m_new = fmaxf(m, row_max(tile_max));
    const float base = m_new == -INFINITY ? 0.f : m_new;  // a row that has seen no key yet
    const float alpha = expf(m - base);                   // rescales what was summed under m
    m = m_new;
    l *= alpha;
    ATTN_UNROLL
    for (int x = 0; x < Tl::vecs; x++) acc[x] = scaled(acc[x], alpha);
    ATTN_UNROLL
    for (int c = 0; c < kCols / 4; c++) {
      float p = expf(s[c] - base);
      l += p;
      sp[r * ldp + sub + 4 * c] = p;
    }
    __syncthreads();  // the row's probabilities are in (written by its 4 threads)
    row_accumulate<D, kCols>(acc, sp + r * ldp, sv, sub);
  }
  l = row_sum(l);
  if (i < T_) {
    store_row<D>(y + ((int64_t(b) * T_ + i) * H + h) * D, acc, 1.0f / l, sub);
    if (sub == 0) lse[(int64_t(b) * H + h) * T_ + i] = m + logf(l);
  }
}

// ---- backward ---------------------------------------------------------------------------------
// delta (B, H, T_) = dy . y per row. One warp per (b, t, h) row, kThreads threads per block.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    attention_delta_kernel(float* delta, const T* dy, const T* y, int B, int T_, int H) {
  // row = (b * T_ + t) * H + h
  const int64_t row = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= int64_t(B) * T_ * H) return;  // whole warps leave together
  float s = 0.f;
  for (int d = 4 * lane; d < D; d += 128) {
    float4 a = load4(dy + row * D + d), c = load4(y + row * D + d);
    s += a.x * c.x + a.y * c.y + a.z * c.z + a.w * c.w;
  }
  for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(kFullMask, s, off);
  if (lane == 0) {
    const int64_t h = row % H, t = row / H % T_, b = row / (int64_t(H) * T_);
    delta[(b * H + h) * T_ + t] = s;
  }
}

// dq. grid (H, B, ceil(T_ / kRows)), kThreads threads: one block per 64 queries of one (b, h),
// streaming key/value tiles. Shared: queries and dy (kRows, D), key and value tiles (cols, D), dS
// (kRows, cols).
template <typename T, int D, int Cols>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(T* dq, const T* dy, const float* lse, const float* delta,
                                 const T* q, const T* k, const T* v, int T_, int H, int Hkv) {
  using Tl = Tile<D, Cols>;
  constexpr int kCols = Tl::cols, ld = Tl::ld, ldp = Tl::ldp;
  EXTERN_SHARED(float, smem);
  float* sq = smem;               // (kRows, D)
  float* sdy = sq + kRows * ld;   // (kRows, D)
  float* sk = sdy + kRows * ld;   // (kCols, D)
  float* sv = sk + kCols * ld;        // (kCols, D)
  float* sds = sv + kCols * ld;       // (kRows, kCols)

  const int h = blockIdx.x, b = blockIdx.y, g = h / (H / Hkv), i0 = query_tile_last_first();
  const int r = threadIdx.x / 4, sub = threadIdx.x % 4, i = i0 + r;
  const int64_t q_stride = int64_t(H) * D, kv_stride = int64_t(Hkv) * D;
  const int64_t first = ((int64_t(b) * T_ + i0) * H + h) * D;  // query i0 of this (b, h)
  const T* kb = k + (int64_t(b) * T_ * Hkv + g) * D;
  const T* vb = v + (int64_t(b) * T_ * Hkv + g) * D;
  const float scale = 1.0f / sqrtf(float(D));

  const int rows = imin(kRows, T_ - i0);
  load_rows<D>(sq, q + first, q_stride, kRows, rows);
  load_rows<D>(sdy, dy + first, q_stride, kRows, rows);
  const float lse_i = i < T_ ? lse[(int64_t(b) * H + h) * T_ + i] : 0.f;
  const float delta_i = i < T_ ? delta[(int64_t(b) * H + h) * T_ + i] : 0.f;
  float4 acc[Tl::vecs] = {};  // sum_j ds_ij k_j, this thread's columns
  const int keys = imin(i0 + kRows, T_);
  for (int j0 = 0; j0 < keys; j0 += kCols) {
    __syncthreads();
    load_rows<D>(sk, kb + j0 * kv_stride, kv_stride, kCols, imin(kCols, T_ - j0));
    load_rows<D>(sv, vb + j0 * kv_stride, kv_stride, kCols, imin(kCols, T_ - j0));
    __syncthreads();
    float s[kCols / 4], dp[kCols / 4];
    row_dots<D, kCols>(s, sq + r * ld, sk, sub);
    row_dots<D, kCols>(dp, sdy + r * ld, sv, sub);
    ATTN_UNROLL
    for (int c = 0; c < kCols / 4; c++) {
      int j = j0 + sub + 4 * c;
      float p = j <= i && i < T_ ? expf(s[c] * scale - lse_i) : 0.f;
      sds[r * ldp + sub + 4 * c] = p * (dp[c] - delta_i);
    }
    __syncthreads();
    row_accumulate<D, kCols>(acc, sds + r * ldp, sk, sub);
  }
  if (i < T_) store_row<D>(dq + first + int64_t(r) * q_stride, acc, scale, sub);
}

// dk and dv. grid (Hkv, B, ceil(T_ / kRows)), kThreads threads: one block per 64 keys of one
// (b, g); it streams the query tiles at or after its keys, for each of the H / Hkv query heads of
// g in turn, and so sums the group in a fixed order. Shared: keys and values (kRows, D), query and
// dy tiles (cols, D), P and dS (kRows, cols) transposed (a row per key), lse and delta (cols).
template <typename T, int D, int Cols>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(T* dk, T* dv, const T* dy, const float* lse, const float* delta,
                                   const T* q, const T* k, const T* v, int T_, int H, int Hkv) {
  using Tl = Tile<D, Cols>;
  constexpr int kCols = Tl::cols, ld = Tl::ld, ldp = Tl::ldp;
  EXTERN_SHARED(float, smem);
  float* sk = smem;               // (kRows, D)
  float* sv = sk + kRows * ld;    // (kRows, D)
  float* sq = sv + kRows * ld;    // (kCols, D)
  float* sdy = sq + kCols * ld;       // (kCols, D)
  float* sp = sdy + kCols * ld;       // (kRows, kCols)
  float* sds = sp + kRows * ldp;  // (kRows, kCols)
  float* slse = sds + kRows * ldp;  // (kCols)
  float* sdelta = slse + kCols;         // (kCols)

  const int g = blockIdx.x, b = blockIdx.y, j0 = blockIdx.z * kRows, G = H / Hkv;
  const int r = threadIdx.x / 4, sub = threadIdx.x % 4, j = j0 + r;
  const int64_t q_stride = int64_t(H) * D, kv_stride = int64_t(Hkv) * D;
  const int64_t first = ((int64_t(b) * T_ + j0) * Hkv + g) * D;  // key j0 of this (b, g)
  const float scale = 1.0f / sqrtf(float(D));

  load_rows<D>(sk, k + first, kv_stride, kRows, imin(kRows, T_ - j0));
  load_rows<D>(sv, v + first, kv_stride, kRows, imin(kRows, T_ - j0));
  float4 dk_acc[Tl::vecs] = {}, dv_acc[Tl::vecs] = {};  // this thread's columns of dk_j, dv_j
  for (int h = g * G; h < (g + 1) * G; h++) {
    const float* lse_h = lse + (int64_t(b) * H + h) * T_;
    const float* delta_h = delta + (int64_t(b) * H + h) * T_;
    for (int i0 = j0; i0 < T_; i0 += kCols) {  // queries before j0 see none of these keys
      __syncthreads();
      const int64_t qfirst = ((int64_t(b) * T_ + i0) * H + h) * D;
      load_rows<D>(sq, q + qfirst, q_stride, kCols, imin(kCols, T_ - i0));
      load_rows<D>(sdy, dy + qfirst, q_stride, kCols, imin(kCols, T_ - i0));
      if (threadIdx.x < kCols) {
        int i = i0 + threadIdx.x;
        slse[threadIdx.x] = i < T_ ? lse_h[i] : 0.f;
        sdelta[threadIdx.x] = i < T_ ? delta_h[i] : 0.f;
      }
      __syncthreads();
      float s[kCols / 4], dp[kCols / 4];
      row_dots<D, kCols>(s, sk + r * ld, sq, sub);   // s_ij / scale for this key j and queries i
      row_dots<D, kCols>(dp, sv + r * ld, sdy, sub);  // dp_ij = dy_i . v_j
      ATTN_UNROLL
      for (int c = 0; c < kCols / 4; c++) {
        int col = sub + 4 * c, i = i0 + col;
        float p = j <= i && i < T_ ? expf(s[c] * scale - slse[col]) : 0.f;
        sp[r * ldp + col] = p;
        sds[r * ldp + col] = p * (dp[c] - sdelta[col]);
      }
      __syncthreads();
      row_accumulate<D, kCols>(dv_acc, sp + r * ldp, sdy, sub);
      row_accumulate<D, kCols>(dk_acc, sds + r * ldp, sq, sub);
    }
  }
  if (j < T_) {
    store_row<D>(dk + first + int64_t(r) * kv_stride, dk_acc, scale, sub);
    store_row<D>(dv + first + int64_t(r) * kv_stride, dv_acc, 1.0f, sub);
  }
}

// ---- launchers ---------------------------------------------------------------------------------
// Shared bytes of each kernel with `cols` columns per streamed tile.
template <int D>
constexpr size_t forward_shared_bytes(int cols) {
  constexpr int ld = Tile<D>::ld;  // queries; keys and values; probabilities
  return sizeof(float) * (kRows * ld + 2 * cols * ld + kRows * (cols + 4));
}
template <int D>
constexpr size_t dq_shared_bytes(int cols) {
  constexpr int ld = Tile<D>::ld;  // queries and dy; keys and values; dS
  return sizeof(float) * (2 * kRows * ld + 2 * cols * ld + kRows * (cols + 4));
}
template <int D>
constexpr size_t dkdv_shared_bytes(int cols) {
  constexpr int ld = Tile<D>::ld;  // keys and values; queries and dy; P and dS; lse and delta
  return sizeof(float) * (2 * kRows * ld + 2 * cols * ld + 2 * kRows * (cols + 4) + 2 * cols);
}

// The column counts each kernel is compiled for, largest first: the full tile, then half of it.
template <int D>
constexpr KernelTile kAttentionTiles[] = {{kRows, full_cols<D>()}, {kRows, full_cols<D>() / 2}};

template <int D>
KernelTile forward_tile() {
  return choose_tile("attention_forward", kAttentionTiles<D>, [](int, int c) { return forward_shared_bytes<D>(c); });
}
template <int D>
KernelTile dq_tile() {
  return choose_tile("attention_backward (dq)", kAttentionTiles<D>, [](int, int c) { return dq_shared_bytes<D>(c); });
}
template <int D>
KernelTile dkdv_tile() {
  return choose_tile("attention_backward (dk, dv)", kAttentionTiles<D>,
                     [](int, int c) { return dkdv_shared_bytes<D>(c); });
}
template <int D>
AttentionTiles tiles_d() {
  return {forward_tile<D>(), dq_tile<D>(), dkdv_tile<D>()};
}

// Calls launch(cols) with the tile t (one of kAttentionTiles<D>) as a std::integral_constant, so
// that the launch names the kernel instance compiled for it.
template <int D, typename Launch>
void with_cols(const KernelTile& t, Launch&& launch) {
  constexpr int full = full_cols<D>();
  if (t.cols == full) return launch(std::integral_constant<int, full>{});
  ENSURE(t.cols == full / 2, "attention (cuda): no kernel compiled for %d columns at D = %d", t.cols, D);
  launch(std::integral_constant<int, full / 2>{});
}

void check_shapes(const char* op, const void* const* ptrs, int n, int B, int T_, int H, int Hkv,
                  int D) {
  ENSURE(D == 16 || D == 32 || D == 64 || D == 128,
         "%s (cuda): head size D = %d is not supported (16, 32, 64 or 128)", op, D);
  ENSURE(B >= 0 && T_ >= 0 && H > 0 && Hkv > 0 && H % Hkv == 0,
         "%s (cuda): bad sizes B = %d, T = %d, H = %d, Hkv = %d (H must be a multiple of Hkv)", op,
         B, T_, H, Hkv);
  for (int a = 0; a < n; a++)
    ENSURE(reinterpret_cast<uintptr_t>(ptrs[a]) % 16 == 0,
           "%s (cuda): pointer argument %d is not 16-byte aligned", op, a + 1);
}

template <typename T, int D>
void forward_d(T* y, float* lse, const T* q, const T* k, const T* v, int B, int T_, int H, int Hkv,
               Stream stream) {
  const KernelTile tile = forward_tile<D>();
  with_cols<D>(tile, [&](auto cols) {
    auto* forward_kernel = attention_forward_kernel<T, D, decltype(cols)::value>;
    allow_shared(forward_kernel, tile.shared_bytes);
    launch_kernel(forward_kernel, dim3(H, B, ceil_div(T_, kRows)), kThreads, tile.shared_bytes, stream, y,
                  lse, q, k, v, T_, H, Hkv);
  });
}

template <typename T, int D>
void backward_d(T* dq, T* dk, T* dv, const T* dy, const T* y, const float* lse, const T* q,
                const T* k, const T* v, int B, int T_, int H, int Hkv, Stream stream) {
  DeviceScratch<float> delta(size_t(B) * H * T_, stream);  // (B, H, T_)
  const int64_t rows = int64_t(B) * T_ * H;
  auto* delta_kernel = attention_delta_kernel<T, D>;
  launch_kernel(delta_kernel, unsigned(ceil_div(int(rows), kThreads / 32)), kThreads, 0, stream,
                delta.p, dy, y, B, T_, H);
  const float* delta_p = delta.p;

  const KernelTile dq_t = dq_tile<D>(), dkdv_t = dkdv_tile<D>();
  with_cols<D>(dq_t, [&](auto cols) {
    auto* dq_kernel = attention_backward_dq_kernel<T, D, decltype(cols)::value>;
    allow_shared(dq_kernel, dq_t.shared_bytes);
    launch_kernel(dq_kernel, dim3(H, B, ceil_div(T_, kRows)), kThreads, dq_t.shared_bytes, stream,
                  dq, dy, lse, delta_p, q, k, v, T_, H, Hkv);
  });
  with_cols<D>(dkdv_t, [&](auto cols) {
    auto* dkdv_kernel = attention_backward_dkdv_kernel<T, D, decltype(cols)::value>;
    allow_shared(dkdv_kernel, dkdv_t.shared_bytes);
    launch_kernel(dkdv_kernel, dim3(Hkv, B, ceil_div(T_, kRows)), kThreads, dkdv_t.shared_bytes,
                  stream, dk, dv, dy, lse, delta_p, q, k, v, T_, H, Hkv);
  });
}

}  // namespace

AttentionTiles attention_tiles(int D) {
  switch (D) {
    case 16: return tiles_d<16>();
    case 32: return tiles_d<32>();
    case 64: return tiles_d<64>();
    case 128: return tiles_d<128>();
  }
  fail(__FILE__, __LINE__, strfmt("attention_tiles (cuda): head size D = %d is not supported (16, 32, 64 or 128)", D));
}

template <typename T>
void attention_forward(T* y, float* lse, const T* q, const T* k, const T* v, int B, int T_, int H,
                       int Hkv, int D, Stream stream) {
  const void* ptrs[] = {y, lse, q, k, v};
  check_shapes("attention_forward", ptrs, 5, B, T_, H, Hkv, D);
  if (B == 0 || T_ == 0) return;
  switch (D) {
    case 16: return forward_d<T, 16>(y, lse, q, k, v, B, T_, H, Hkv, stream);
    case 32: return forward_d<T, 32>(y, lse, q, k, v, B, T_, H, Hkv, stream);
    case 64: return forward_d<T, 64>(y, lse, q, k, v, B, T_, H, Hkv, stream);
    default: return forward_d<T, 128>(y, lse, q, k, v, B, T_, H, Hkv, stream);
  }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dy, const T* y, const float* lse, const T* q,
                        const T* k, const T* v, int B, int T_, int H, int Hkv, int D,
                        Stream stream) {
  const void* ptrs[] = {dq, dk, dv, dy, y, lse, q, k, v};
  check_shapes("attention_backward", ptrs, 9, B, T_, H, Hkv, D);
  if (B == 0 || T_ == 0) return;
  switch (D) {
    case 16: return backward_d<T, 16>(dq, dk, dv, dy, y, lse, q, k, v, B, T_, H, Hkv, stream);
    case 32: return backward_d<T, 32>(dq, dk, dv, dy, y, lse, q, k, v, B, T_, H, Hkv, stream);
    case 64: return backward_d<T, 64>(dq, dk, dv, dy, y, lse, q, k, v, B, T_, H, Hkv, stream);
    default: return backward_d<T, 128>(dq, dk, dv, dy, y, lse, q, k, v, B, T_, H, Hkv, stream);
  }
}

template void attention_forward<float>(float*, float*, const float*, const float*, const float*,
                                       int, int, int, int, int, Stream);
template void attention_forward<bf16>(bf16*, float*, const bf16*, const bf16*, const bf16*, int,
                                      int, int, int, int, Stream);
template void attention_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, const float*,
                                        int, int, int, int, int, Stream);
template void attention_backward<bf16>(bf16*, bf16*, bf16*, const bf16*, const bf16*, const float*,
                                       const bf16*, const bf16*, const bf16*, int, int, int, int,
                                       int, Stream);

}  // namespace lolcats::cuda
