// Decoding on the GPU, a batch of sequences per step (the CPU twins: tensor/attention.h
// decode_attention, lolcats/recurrent.cpp).
//
//   kv_cache_write     k, v rows -> the softmax layers' KV cache, at each row's sequence and position
//   decode_attention   each row's query against its sequence's cache, causal (flash-decoding: each
//                      warp runs an online softmax over a share of the keys; the warps' partial
//                      results are merged at the end)
//   lolcats_decode_attention   the LoLCATs recurrent step of a converted layer, fused: for each
//                      sequence and query head, row after row, fold the keys that leave the window
//                      into S += phi_k(k) v^T, z += phi_k(k) (phi: that head's feature map), then
//                      y = (sum_window A v + phi_q(q) S) / (sum_window A + phi_q(q) . z)
//                      with A = g exp(q.k/sqrt(D) - max) over the window (LOLCATS.md 2.3). With a
//                      sparse cache the leaving keys pass its rule first and the cache's keys
//                      join the window's (lolcats/sparse_cache.h, LOLCATS.md 9)
//   lolcats_ring_write the step's keys and values -> the window ring (slot = position % 128)
// Storage: rows, caches and ring in T (float or bf16); S, z, feature-map weights and window
// factors in f32; all arithmetic f32.
#pragma once
#include <cstdint>

#include "cuda/api.h"
#include "lolcats/window.h"

namespace lolcats::cuda {

template <typename T>
void kv_cache_write(T* k_cache, T* v_cache,        // (batch, max_len, Hkv, D)
                    const T* k, const T* v,        // (R, Hkv, D)
                    const int32_t* row_seq,        // (R) device: each row's sequence
                    const int32_t* row_pos,        // (R) device: and position
                    int R, int Hkv, int D, int max_len, Stream stream);

template <typename T>
void decode_attention(T* y,                        // (R, H, D)
                      const T* q,                  // (R, H, D)
                      const T* k_cache, const T* v_cache,  // (batch, max_len, Hkv, D)
                      const int32_t* row_seq, const int32_t* row_pos,  // (R) device
                      int R, int H, int Hkv, int D, int max_len, Stream stream);

// One converted layer's recurrent state, device pointers.
template <typename T>
struct LolcatsLayerState {
  float* S;          // (batch, H, F, D)
  float* z;          // (batch, H, F)
  T* ring_k;         // (batch, 128, Hkv, D)
  T* ring_v;         // (batch, 128, Hkv, D)
  const float* wq;   // (H, D, Fh) Hedgehog, (H, D, F) T2R: the query feature map
  const float* wk;   // the key feature map, same shape
  const float* bq;   // (H, F) T2R only, else null
  const float* bk;
  const float* wlogit;  // (H) window factor logits: g = sigmoid
  // The sparse cache (lolcats/sparse_cache.h), when cache_cap = G > 0: pairs 0 .. cache_n-1 of each
  // (sequence, query head), in position order.
  int cache_cap = 0;
  int cache_sinks = 0;             // the sequence's first keys, which always stay
  T* cache_k = nullptr;            // (batch, H, G, D)
  T* cache_v = nullptr;            // (batch, H, G, D)
  float* cache_phi = nullptr;      // (batch, H, G, F) phi_k of each cached key
  int32_t* cache_pos = nullptr;    // (batch, H, G)
  int32_t* cache_n = nullptr;      // (batch, H)
};

// Rows of sequence b are rows seq[4b] .. seq[4b] + seq[4b+1] - 1 of q, k, v, y, at positions
// seq[4b+2] + t; keys 0 .. seq[4b+3]-1 are already in S, z (seq: (batch, 4) i32 on the device).
// window: whose window rule the rows follow (lolcats/window.h). Writes y for every row; leaves the
// ring to lolcats_ring_write (after this kernel: a row's window reads keys of the same step from k, v).
template <typename T>
void lolcats_decode_attention(T* y,                    // (R, H, D)
                              const T* q,              // (R, H, D)
                              const T* k, const T* v,  // (R, Hkv, D)
                              const LolcatsLayerState<T>& state, const int32_t* seq, int batch, int H, int Hkv,
                              int D, int Fh, int F, bool t2r, HybridVariant window, Stream stream);

template <typename T>
void lolcats_ring_write(T* ring_k, T* ring_v, const T* k, const T* v, const int32_t* seq, int batch, int Hkv,
                        int D, Stream stream);

}  // namespace lolcats::cuda
