// Causal softmax attention with grouped-query heads (GQA), the attention of every Llama.
//
//   q (B, T, H, D), k and v (B, T, Hkv, D), query head h reads key/value head h / (H / Hkv).
//   s_ij = q_i . k_j / sqrt(D)   for j <= i          (causal: future keys are masked out)
//   p_ij = exp(s_ij - lse_i),    lse_i = log sum_{j<=i} exp(s_ij)         (saved: lse (B, H, T))
//   y_i  = sum_j p_ij v_j                                                y (B, T, H, D)
//   PyTorch: F.scaled_dot_product_attention(q, k.repeat_interleave(G), v..., is_causal=True)
//
// Backward (per head; dP and dS are T x T like P):
//   dv_j += sum_i p_ij dy_i                 dp_ij = dy_i . v_j
//   ds_ij = p_ij (dp_ij - delta_i),         delta_i = sum_j p_ij dp_ij = dy_i . y_i
//   dq_i  = sum_j ds_ij k_j / sqrt(D)       dk_j += sum_i ds_ij q_i / sqrt(D)
// dk and dv sum over the H/Hkv query heads that share a key/value head. All gradients are written.
//
// Memory: scores are computed for a tile of query rows at a time (rows i0..i1 against keys 0..i1),
// so no full T x T matrix is ever alive, and the masked upper triangle is mostly skipped.
// P is recomputed in the backward from the saved lse instead of being stored.
#pragma once
#include <cstdint>

namespace lolcats {

template <typename T>
void attention_forward(T* y, T* lse, const T* q, const T* k, const T* v, int B, int T_, int H,
                       int Hkv, int D);
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dy, const T* y, const T* lse, const T* q,
                        const T* k, const T* v, int B, int T_, int H, int Hkv, int D);

}  // namespace lolcats

namespace lolcats {

// Inference with a key/value cache (one sequence): Tq new queries at absolute positions
// start .. start+Tq-1 attend causally to cached keys 0 .. start+Tq-1 (the new keys already
// written into the cache). Same math as attention_forward; with start = 0 it is the same op.
//   y (Tq, H, D), q (Tq, H, D), k_cache / v_cache (>= start+Tq, Hkv, D)
template <typename T>
void attention_forward_cached(T* y, const T* q, const T* k_cache, const T* v_cache, int Tq,
                              int start, int H, int Hkv, int D);


// Tensor-level entry points (tensor/device.h). q, y (B, T, H, D); k, v (B, T, Hkv, D); lse
// (B, H, T) f32. The backward writes all three gradients.
class Tensor;
void attention_forward(Tensor& y, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v);
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dy, const Tensor& y,
                        const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v);

}  // namespace lolcats
