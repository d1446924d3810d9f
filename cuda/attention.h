// Causal softmax attention with grouped-query heads (GQA) on CUDA, FlashAttention-style: the CUDA
// twin of tensor/attention.h (same names, same argument order, stream last), whose header comment
// derives the backward. Per query head h (key/value head g = h / (H / Hkv)), scale = 1/sqrt(D):
//   s_ij = scale q_i . k_j (j <= i),  lse_i = log sum_j exp(s_ij),  p_ij = exp(s_ij - lse_i)
//   y_i = sum_j p_ij v_j
//   delta_i = dy_i . y_i,  ds_ij = p_ij (dy_i . v_j - delta_i)
//   dq_i = scale sum_j ds_ij k_j
//   dk_j = scale sum_{h in g} sum_i ds_ij q_i,  dv_j = sum_{h in g} sum_i p_ij dy_i
//
// Tiling (no T x T matrix ever exists in memory): a block owns 64 rows and 4 threads per row
// (256 threads). It streams tiles of 32 columns (64 when D <= 64; half that on cards whose
// per-block shared memory is short: attention_tiles) through shared memory, in order,
// skipping the tiles above the causal diagonal; each thread computes a quarter of the row's scores
// and owns a quarter of the row's output columns.
//   forward:  rows = queries of one (b, h); streams key/value tiles; online softmax (running max,
//             running sum, f32 accumulator), then y = acc / sum and lse = max + log(sum).
//   backward: delta by a small kernel; dq by a block per (b, h, 64 queries) streaming key/value
//             tiles; dk and dv by a block per (b, g, 64 keys) streaming query tiles of each of the
//             H/Hkv query heads of g in turn, so the group sum is deterministic (no atomics).
//             P is recomputed from the saved lse in both.
// Storage T is float or bf16; all arithmetic is f32. D is 64 or 128 (SmolLM2, Llama 3), or 16 or
// 32 (test models, small checkpoints); other head sizes throw lolcats::Error. Pointers must be 16-byte aligned (rows are loaded 4 values at a time).
#pragma once
#include "cuda/api.h"
#include "cuda/kernel_tile.h"

namespace lolcats::cuda {

template <typename T>
void attention_forward(T* y,            // (B, T_, H, D)    written
                       float* lse,      // (B, H, T_) f32   written: log-sum-exp of each score row
                       const T* q,      // (B, T_, H, D)
                       const T* k,      // (B, T_, Hkv, D)
                       const T* v,      // (B, T_, Hkv, D)
                       int B, int T_, int H, int Hkv, int D, Stream stream);

// All three gradients are written (=), not accumulated.
template <typename T>
void attention_backward(T* dq,             // (B, T_, H, D)    written
                        T* dk,             // (B, T_, Hkv, D)  written: summed over the group's heads
                        T* dv,             // (B, T_, Hkv, D)  written: summed over the group's heads
                        const T* dy,       // (B, T_, H, D)
                        const T* y,        // (B, T_, H, D)    the forward's output
                        const float* lse,  // (B, H, T_) f32   the forward's log-sum-exp
                        const T* q,        // (B, T_, H, D)
                        const T* k,        // (B, T_, Hkv, D)
                        const T* v,        // (B, T_, Hkv, D)
                        int B, int T_, int H, int Hkv, int D, Stream stream);

// The tiles the launchers above pick on the current device for head size D: each kernel streams
// the full tile of columns (64 at D <= 64, else 32) where the card's per-block shared memory allows
// it, else half of it; rows are always 64. Throws, naming the limit, when neither fits.
struct AttentionTiles {
  KernelTile forward, dq, dkdv;
};
AttentionTiles attention_tiles(int D);

}  // namespace lolcats::cuda
