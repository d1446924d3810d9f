// Decode kernels, then their launchers (what each computes: cuda/decode.h).
#include "cuda/decode.h"

#include "cuda/common.cuh"
#include "lolcats/sparse_cache.h"

#include <algorithm>
#include <cmath>

namespace lolcats::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kRing = 128;     // the window ring: 2 x the 64-token block (LolcatsMemory::kRing)
constexpr int kMaxD = 128;     // head dims up to this (per lane: D / 32 <= 4 elements)
constexpr int kMaxF = 256;     // features per head (Hedgehog: 2 Fh)
constexpr int kThreads = 128;  // per block: one thread per head-vector element, per window key

struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Min {
  __device__ float operator()(float a, float b) const { return fminf(a, b); }
};

// The whole block's reduction of v by op; every thread gets the result. red: 32 floats of shared
// memory, free again on return.
template <typename Op>
__device__ float block_reduce(float v, Op op, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int o = 16; o > 0; o /= 2) v = op(v, __shfl_xor_sync(kFullMask, v, o));
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < warps; w++) r = op(r, red[w]);
  __syncthreads();
  return r;
}

// ---- KV cache -------------------------------------------------------------------------------------

template <typename T>
__global__ void kv_cache_write_kernel(T* kc, T* vc, const T* k, const T* v, const int32_t* row_seq,
                                      const int32_t* row_pos, int KD, int max_len, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / KD, e = i % KD;
    const int64_t at = (int64_t(row_seq[r]) * max_len + row_pos[r]) * KD + e;
    kc[at] = k[i];
    vc[at] = v[i];
  }
}

// One block per (row, head); warp w takes keys w, w + 4, ...; lane l holds elements l, l + 32, ...
// of the query and of its running output. Each warp keeps an online softmax (running max m, sum l,
// output acc rescaled whenever m grows); the four partial results are merged through shared memory.
template <typename T>
__global__ void decode_attention_kernel(T* y, const T* q, const T* kc, const T* vc, const int32_t* row_seq,
                                        const int32_t* row_pos, int H, int Hkv, int D, int max_len, float scale) {
  __shared__ float part_m[kThreads / 32], part_l[kThreads / 32], part_acc[kThreads / 32][kMaxD];
  const int r = blockIdx.x / H, h = blockIdx.x % H, hk = h / (H / Hkv);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int keys = row_pos[r] + 1;
  const T* kb = kc + int64_t(row_seq[r]) * max_len * Hkv * D + int64_t(hk) * D;
  const T* vb = vc + int64_t(row_seq[r]) * max_len * Hkv * D + int64_t(hk) * D;
  float qv[kMaxD / 32], acc[kMaxD / 32];
  for (int i = 0; i < kMaxD / 32; i++) {
    const int e = lane + 32 * i;
    qv[i] = e < D ? to_f32(q[(int64_t(r) * H + h) * D + e]) : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = warp; j < keys; j += warps) {
    const T* kj = kb + int64_t(j) * Hkv * D;
    const T* vj = vb + int64_t(j) * Hkv * D;
    float s = 0.0f;
    for (int i = 0; i < kMaxD / 32; i++)
      if (lane + 32 * i < D) s += qv[i] * to_f32(kj[lane + 32 * i]);
    for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(kFullMask, s, o);
    s *= scale;
    const float m_new = fmaxf(m, s), c = expf(m - m_new), p = expf(s - m_new);
    l = l * c + p;
    for (int i = 0; i < kMaxD / 32; i++)
      if (lane + 32 * i < D) acc[i] = acc[i] * c + p * to_f32(vj[lane + 32 * i]);
    m = m_new;
  }
  if (lane == 0) part_m[warp] = m, part_l[warp] = l;
  for (int i = 0; i < kMaxD / 32; i++)
    if (lane + 32 * i < D) part_acc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  float M = part_m[0];  // warp 0 always has key 0
  for (int w = 1; w < warps; w++) M = fmaxf(M, part_m[w]);
  float L = 0.0f;
  for (int w = 0; w < warps; w++) L += part_l[w] * expf(part_m[w] - M);  // a warp with no key: m = -inf, adds 0
  for (int e = threadIdx.x; e < D; e += blockDim.x) {
    float out = 0.0f;
    for (int w = 0; w < warps; w++) out += part_acc[w][e] * expf(part_m[w] - M);
    y[(int64_t(r) * H + h) * D + e] = from_f32<T>(out / L);
  }
}

// ---- LoLCATs recurrent step -----------------------------------------------------------------------

// phi (F) = one head's feature map of x (D) (lolcats/feature_map.h), by the whole block.
// Hedgehog: z = x W (W: (D, Fh)); phi = [softmax(z), softmax(-z)] clamped at 1e-12.
// T2R: phi = relu(x W + b) (W: (D, F)). zbuf: Fh floats, red: 32 floats of shared memory.
template <typename T>
__device__ void feature_map(float* phi, const T* x, const float* W, const float* bias, int D, int Fh, int F,
                            bool t2r, float* zbuf, float* red) {
  if (t2r) {
    for (int f = threadIdx.x; f < F; f += blockDim.x) {
      float a = bias[f];
      for (int d = 0; d < D; d++) a += to_f32(x[d]) * W[d * F + f];
      phi[f] = fmaxf(a, 0.0f);
    }
    __syncthreads();
    return;
  }
  float zmax = -INFINITY, zmin = INFINITY;
  for (int f = threadIdx.x; f < Fh; f += blockDim.x) {
    float a = 0.0f;
    for (int d = 0; d < D; d++) a += to_f32(x[d]) * W[d * Fh + f];
    zbuf[f] = a;
    zmax = fmaxf(zmax, a), zmin = fminf(zmin, a);
  }
  zmax = block_reduce(zmax, Max(), red);
  zmin = block_reduce(zmin, Min(), red);
  float s1 = 0.0f, s2 = 0.0f;
  for (int f = threadIdx.x; f < Fh; f += blockDim.x) {
    s1 += (phi[f] = expf(zbuf[f] - zmax));
    s2 += (phi[Fh + f] = expf(zmin - zbuf[f]));
  }
  s1 = block_reduce(s1, Sum(), red);
  s2 = block_reduce(s2, Sum(), red);
  for (int f = threadIdx.x; f < Fh; f += blockDim.x) {
    phi[f] = fmaxf(phi[f] / s1, 1e-12f);
    phi[Fh + f] = fmaxf(phi[Fh + f] / s2, 1e-12f);
  }
  __syncthreads();
}

// The sparse cache's rule for query head h when keys from .. to-1 leave its window
// (lolcats/sparse_cache.h; the CPU twin: leave_window in lolcats/recurrent.cpp). Candidates, in
// position order: cache slots 0 .. cn-1, then the leaving keys. When more than G, each is scored by
// its recall error against S, z as they are; then in position order a candidate that stays moves
// down to the next free slot (never above its own) and the others are folded into S, z.
// key_row(rows, ring, j): key/value j of the sequence; phi: F floats; recall, stays: G + 64 each.
constexpr int kMaxCandidates = kMaxSparseCache + kHybridBlock;

template <typename T, typename KeyRow>
__device__ void sparse_cache_leave(const LolcatsLayerState<T>& st, int b, int h, int H, int D, int Fh, int F, bool t2r,
                                   float* S, float* z, int from, int to, const T* k, const T* v, KeyRow key_row,
                                   float* phi, float* zbuf, float* red, float* recall, int* stays) {
  const int G = st.cache_cap, Fw = t2r ? F : Fh;
  const int64_t slot0 = (int64_t(b) * H + h) * G;
  T *ck = st.cache_k + slot0 * D, *cv = st.cache_v + slot0 * D;
  float* cphi = st.cache_phi + slot0 * F;
  int32_t* cpos = st.cache_pos + slot0;
  const int cn = st.cache_n[int64_t(b) * H + h], n = cn + (to - from);
  const float* Wk = st.wk + int64_t(h) * D * Fw;
  const float* bk = t2r ? st.bk + int64_t(h) * F : nullptr;
  auto load_phi = [&](int i) {  // candidate i's phi_k -> phi (ends with a barrier)
    if (i < cn) {
      for (int f = threadIdx.x; f < F; f += blockDim.x) phi[f] = cphi[int64_t(i) * F + f];
      __syncthreads();
    } else {
      feature_map(phi, key_row(k, st.ring_k, from + i - cn), Wk, bk, D, Fh, F, t2r, zbuf, red);
    }
  };
  auto value_of = [&](int i) { return i < cn ? cv + int64_t(i) * D : key_row(v, st.ring_v, from + i - cn); };
  auto key_of = [&](int i) { return i < cn ? ck + int64_t(i) * D : key_row(k, st.ring_k, from + i - cn); };
  if (n > G) {
    for (int i = 0; i < n; i++) {  // e_i = || v - phi^T S / (phi^T z + eps) ||, thread e: element e
      if ((i < cn ? cpos[i] : from + i - cn) < st.cache_sinks) {  // a sink ranks first
        if (threadIdx.x == 0) recall[i] = INFINITY;
        continue;
      }
      load_phi(i);
      float den = 0.0f;
      for (int f = threadIdx.x; f < F; f += blockDim.x) den += phi[f] * z[f];
      den = block_reduce(den, Sum(), red) + kRecallEps;
      float r2 = 0.0f;
      if (const int e = threadIdx.x; e < D) {
        float num = 0.0f;
        for (int f = 0; f < F; f++) num += phi[f] * S[f * D + e];
        const float r = to_f32(value_of(i)[e]) - num / den;
        r2 = r * r;
      }
      r2 = block_reduce(r2, Sum(), red);
      if (threadIdx.x == 0) recall[i] = sqrtf(r2);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      int before = 0;
      for (int j = 0; j < n; j++) before += j != i && ranks_before(recall[j], j, recall[i], i);
      stays[i] = before < G;
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) stays[i] = 1;
  }
  __syncthreads();
  int kept = 0;
  for (int i = 0; i < n; i++) {
    if (stays[i] && kept == i && i < cn) {  // a cache pair that keeps its slot
      kept++;
      continue;
    }
    load_phi(i);
    const T* vi = value_of(i);
    if (!stays[i]) {
      for (int x = threadIdx.x; x < F * D; x += blockDim.x) S[x] += phi[x / D] * to_f32(vi[x % D]);
      for (int f = threadIdx.x; f < F; f += blockDim.x) z[f] += phi[f];
    } else {
      const T* ki = key_of(i);
      for (int e = threadIdx.x; e < D; e += blockDim.x) ck[int64_t(kept) * D + e] = ki[e], cv[int64_t(kept) * D + e] = vi[e];
      for (int f = threadIdx.x; f < F; f += blockDim.x) cphi[int64_t(kept) * F + f] = phi[f];
      if (threadIdx.x == 0) cpos[kept] = i < cn ? cpos[i] : from + i - cn;
      kept++;
    }
    __syncthreads();  // phi is rewritten next
  }
  if (threadIdx.x == 0) st.cache_n[int64_t(b) * H + h] = kept;
  __syncthreads();
}

// One block per (sequence b, query head h): its rows in order. Key j of the sequence is row
// j - P0 of this step's k, v when j >= P0 (the step's first position), else ring slot j % 128
// (the ring holds the 128 keys before P0; a window never reaches further back).
template <typename T>
__global__ void lolcats_decode_kernel(T* y, const T* q, const T* k, const T* v, LolcatsLayerState<T> st,
                                      const int32_t* seq, int H, int Hkv, int D, int Fh, int F, bool t2r,
                                      HybridVariant window, float scale) {
  __shared__ float phi[kMaxF], zbuf[kMaxF / 2], score[kRing + kMaxSparseCache], red[32];
  __shared__ float recall[kMaxCandidates];
  __shared__ int stays[kMaxCandidates];
  const int b = blockIdx.x / H, h = blockIdx.x % H, hk = h / (H / Hkv);
  const int r0 = seq[4 * b], n = seq[4 * b + 1], P0 = seq[4 * b + 2];
  int folded = seq[4 * b + 3];
  if (n == 0) return;  // the whole block: no barrier is split
  const int KD = Hkv * D, Fw = t2r ? F : Fh;  // Fw: columns of the feature-map weights
  float* S = st.S + (int64_t(b) * H + h) * F * D;
  float* z = st.z + (int64_t(b) * H + h) * F;
  auto key_row = [&](const T* rows, const T* ring, int j) {  // key/value j of the sequence, head hk
    return j >= P0 ? rows + int64_t(r0 + j - P0) * KD + hk * D
                   : ring + (int64_t(b) * kRing + j % kRing) * KD + hk * D;
  };
  const float gate = 1.0f / (1.0f + expf(-st.wlogit[h]));
  for (int t = 0; t < n; t++) {
    const int P = P0 + t, w0 = window_start(P, window), target = w0 < P + 1 ? w0 : P + 1;
    // 1. keys leaving the window: S += phi_k(k_j) v_j^T, z += phi_k(k_j), or the sparse cache's rule
    if (st.cache_cap > 0 && folded < target) {
      sparse_cache_leave(st, b, h, H, D, Fh, F, t2r, S, z, folded, target, k, v, key_row, phi, zbuf, red, recall, stays);
      folded = target;
    }
    for (; folded < target; folded++) {
      const T* kj = key_row(k, st.ring_k, folded);
      const T* vj = key_row(v, st.ring_v, folded);
      feature_map(phi, kj, st.wk + int64_t(h) * D * Fw, t2r ? st.bk + int64_t(h) * F : nullptr, D, Fh, F, t2r,
                  zbuf, red);
      for (int i = threadIdx.x; i < F * D; i += blockDim.x) S[i] += phi[i / D] * to_f32(vj[i % D]);
      for (int f = threadIdx.x; f < F; f += blockDim.x) z[f] += phi[f];
      __syncthreads();  // phi is rewritten next
    }
    // 2. the query: linear part phi_q S, phi_q . z (thread e owns output element e)
    const T* qt = q + (int64_t(r0 + t) * H + h) * D;
    feature_map(phi, qt, st.wq + int64_t(h) * D * Fw, t2r ? st.bq + int64_t(h) * F : nullptr, D, Fh, F, t2r, zbuf,
                red);
    const int e = threadIdx.x;
    float num = 0.0f;
    if (e < D)
      for (int f = 0; f < F; f++) num += phi[f] * S[f * D + e];
    float den = 0.0f;
    for (int f = threadIdx.x; f < F; f += blockDim.x) den += phi[f] * z[f];
    den = block_reduce(den, Sum(), red);
    // 3. the window, then the sparse cache: exact softmax scores shifted by their max, weighted by
    //    g (thread j: keys j, j + 128, ...; key i < window is w0 + i, else cache slot i - window)
    const int window = w0 <= P ? P - w0 + 1 : 0;
    const int keys = window + (st.cache_cap > 0 ? st.cache_n[int64_t(b) * H + h] : 0);
    const int64_t slot0 = (int64_t(b) * H + h) * st.cache_cap * D;
    auto exact_key = [&](const T* rows, const T* ring, const T* cache, int i) {
      return i < window ? key_row(rows, ring, w0 + i) : cache + slot0 + int64_t(i - window) * D;
    };
    float s_max = -INFINITY;
    for (int i = threadIdx.x; i < keys; i += blockDim.x) {
      const T* kj = exact_key(k, st.ring_k, st.cache_k, i);
      float dot = 0.0f;
      for (int d = 0; d < D; d++) dot += to_f32(qt[d]) * to_f32(kj[d]);
      score[i] = dot * scale;
      s_max = fmaxf(s_max, score[i]);
    }
    const float mx = block_reduce(s_max, Max(), red);
    float a_sum = 0.0f;
    for (int i = threadIdx.x; i < keys; i += blockDim.x) a_sum += (score[i] = gate * expf(score[i] - mx));
    den += block_reduce(a_sum, Sum(), red);  // (its barriers also publish score[])
    if (e < D) {
      for (int j = 0; j < keys; j++) num += score[j] * to_f32(exact_key(v, st.ring_v, st.cache_v, j)[e]);
      y[(int64_t(r0 + t) * H + h) * D + e] = from_f32<T>(num / den);
    }
    __syncthreads();  // score and phi are rewritten by the next row
  }
}

// One block per sequence: its last min(n, 128) rows into the ring (older rows of a longer step
// would only be overwritten: their keys are folded already).
template <typename T>
__global__ void lolcats_ring_write_kernel(T* ring_k, T* ring_v, const T* k, const T* v, const int32_t* seq,
                                          int KD) {
  const int b = blockIdx.x, r0 = seq[4 * b], n = seq[4 * b + 1], P0 = seq[4 * b + 2];
  for (int t = n > kRing ? n - kRing : 0; t < n; t++) {
    const int64_t slot = (int64_t(b) * kRing + (P0 + t) % kRing) * KD;
    for (int i = threadIdx.x; i < KD; i += blockDim.x) {
      ring_k[slot + i] = k[int64_t(r0 + t) * KD + i];
      ring_v[slot + i] = v[int64_t(r0 + t) * KD + i];
    }
  }
}

}  // namespace

template <typename T>
void kv_cache_write(T* k_cache, T* v_cache, const T* k, const T* v, const int32_t* row_seq, const int32_t* row_pos,
                    int R, int Hkv, int D, int max_len, Stream stream) {
  const int64_t n = int64_t(R) * Hkv * D;
  if (n == 0) return;
  const int blocks = int(std::min<int64_t>((n + 255) / 256, 4096));
  launch_kernel(kv_cache_write_kernel<T>, blocks, 256, 0, stream, k_cache, v_cache, k, v, row_seq, row_pos, Hkv * D,
                max_len, n);
}

template <typename T>
void decode_attention(T* y, const T* q, const T* k_cache, const T* v_cache, const int32_t* row_seq,
                      const int32_t* row_pos, int R, int H, int Hkv, int D, int max_len, Stream stream) {
  ENSURE(Hkv > 0 && H % Hkv == 0, "decode attention: %d query heads not divisible by %d kv heads", H, Hkv);
  ENSURE(D > 0 && D <= kMaxD, "decode attention: head size %d is not in 1..%d", D, kMaxD);
  if (R == 0) return;
  launch_kernel(decode_attention_kernel<T>, R * H, kThreads, 0, stream, y, q, k_cache, v_cache, row_seq, row_pos,
                H, Hkv, D, max_len, 1.0f / std::sqrt(float(D)));
}

template <typename T>
void lolcats_decode_attention(T* y, const T* q, const T* k, const T* v, const LolcatsLayerState<T>& state,
                              const int32_t* seq, int batch, int H, int Hkv, int D, int Fh, int F, bool t2r,
                              HybridVariant window, Stream stream) {
  ENSURE(Hkv > 0 && H % Hkv == 0, "lolcats decode: %d query heads not divisible by %d kv heads", H, Hkv);
  ENSURE(D > 0 && D <= kThreads && F > 0 && F <= kMaxF && (t2r || Fh * 2 == F),
         "lolcats decode: head size %d (at most %d) or %d features (at most %d) out of range", D, kThreads, F, kMaxF);
  ENSURE(state.cache_cap >= 0 && state.cache_cap <= kMaxSparseCache, "lolcats decode: a sparse cache of %d pairs (at most %d)",
         state.cache_cap, kMaxSparseCache);
  if (batch == 0) return;
  launch_kernel(lolcats_decode_kernel<T>, batch * H, kThreads, 0, stream, y, q, k, v, state, seq, H, Hkv, D, Fh, F,
                t2r, window, 1.0f / std::sqrt(float(D)));
}

template <typename T>
void lolcats_ring_write(T* ring_k, T* ring_v, const T* k, const T* v, const int32_t* seq, int batch, int Hkv, int D,
                        Stream stream) {
  if (batch == 0) return;
  launch_kernel(lolcats_ring_write_kernel<T>, batch, kThreads, 0, stream, ring_k, ring_v, k, v, seq, Hkv * D);
}

#define INSTANTIATE(T)                                                                                           \
  template void kv_cache_write<T>(T*, T*, const T*, const T*, const int32_t*, const int32_t*, int, int, int, int, \
                                  Stream);                                                                        \
  template void decode_attention<T>(T*, const T*, const T*, const T*, const int32_t*, const int32_t*, int, int,   \
                                    int, int, int, Stream);                                                       \
  template void lolcats_decode_attention<T>(T*, const T*, const T*, const T*, const LolcatsLayerState<T>&,       \
                                            const int32_t*, int, int, int, int, int, int, bool, HybridVariant,     \
                                            Stream);                                                          \
  template void lolcats_ring_write<T>(T*, T*, const T*, const T*, const int32_t*, int, int, int, Stream);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace lolcats::cuda
