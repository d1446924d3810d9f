// LoLCATs hybrid attention on CUDA, forward and backward: the twin of lolcats/hybrid_attention.h,
// whose header comment gives the math (window softmax over the current and previous 64-token
// block, linear attention through phi over everything older, one normaliser) and the backward.
//
// Parallel over (batch, head, 32 query rows) instead of the CPU's sequential scan over blocks: the
// running state S = sum phi_k v^T, z = sum phi_k that query block t reads (key blocks <= t-2) is
// first built for every block by a scan kernel, (B, H, nb, F, D) f32, one slice of features per
// thread block; the backward builds the reverse scan P = sum phi_q dN^T, p = sum phi_q dZ over
// query blocks >= u + 2 the same way. Then
//   forward:  one thread block per 32 queries: the window max m_i over the local keys, then
//             A = g exp(s - m) / the local linear weights, and y = (A v + phi_q S) / Z.
//   backward: dq, dphi_q and the window factor's share per 32 queries (local keys, then the state),
//             which also saves each row's m, argmax, dZ and window sum for the second kernel;
//             dk, dv, dphi_k per 32 keys of one key head, over the query heads of its group in
//             turn (so the group sum needs no atomics) and the queries that see them locally (the
//             key's block and the next) and through P. The window factors' gradient is summed from
//             per-thread-block partials in a fixed order: every result is deterministic.
// Each kernel's 32 rows per thread block become 16 (and its 32 streamed columns 16) where the card's
// per-block shared memory is short: hybrid_attention_tiles below says which.
// Storage: q, k, v, y and their gradients in T (float or bf16); the features phi, their gradients,
// Z, the window logits and every running sum in f32. All arithmetic f32. D <= 128, F <= 256.
//
// This is the portable version: scalar f32 loops over shared-memory tiles, runtime D and F. The
// hybrid attention is a few percent of a layer's FLOPs at T = 1024 (the projections dominate), so
// it is kept simple; a tensor-core version would be tested against it.
#pragma once
#include "cuda/api.h"
#include "cuda/kernel_tile.h"
#include "lolcats/window.h"

namespace lolcats::cuda {

template <typename T>
void hybrid_attention_forward(T* y,              // (B, T_, H, D)  written
                              float* Z,          // (B, H, T_)     written: each row's normaliser
                              const T* q,        // (B, T_, H, D)
                              const T* k,        // (B, T_, Hkv, D)
                              const T* v,        // (B, T_, Hkv, D)
                              const float* phiq,  // (B, T_, H, F)
                              const float* phik,  // (B, T_, H, F)
                              const float* wlogit,  // (H)
                              int B, int T_, int H, int Hkv, int D, int F, HybridVariant variant, Stream stream);

// Gradients written (=), except dwlogit (a parameter's gradient), which accumulates (+=). Any of
// the six may be null.
template <typename T>
void hybrid_attention_backward(T* dq, T* dk, T* dv, float* dphiq, float* dphik, float* dwlogit,
                               const T* dy, const T* y, const float* Z, const T* q, const T* k,
                               const T* v, const float* phiq, const float* phik,
                               const float* wlogit, int B, int T_, int H, int Hkv, int D, int F,
                               HybridVariant variant, Stream stream);

// The tiles the launchers above pick on the current device for head size D and F features: per
// kernel, the largest of 32 x 32, 16 x 32, 16 x 16 (rows x columns) whose shared memory fits the
// card's per-block limit (the scan has one tile: a 64-token block x 32 features). Throws, naming
// the limit, when even the smallest does not fit.
struct HybridAttentionTiles {
  KernelTile scan, forward, query, key;  // the state scan; forward; backward over queries, over keys
};
HybridAttentionTiles hybrid_attention_tiles(int D, int F);

}  // namespace lolcats::cuda
