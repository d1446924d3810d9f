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

// Decoding with a key/value cache, for a batch of sequences: row r is position row_pos[r] of
// sequence row_seq[r] and attends causally to that sequence's cached keys 0 .. row_pos[r] (its own
// key already written into the cache). Same math as attention_forward, one query at a time:
//   y_r = softmax(q_r . k_j / sqrt(D), j <= row_pos[r]) . v_j     per head (GQA: key head h / (H/Hkv))
//   y, q (R, H, D); k_cache, v_cache (batch, max_len, Hkv, D)
template <typename T>
void decode_attention(T* y, const T* q, const T* k_cache, const T* v_cache, const int32_t* row_seq,
                      const int32_t* row_pos, int R, int H, int Hkv, int D, int max_len);

// Tensor-level entry points (tensor/device.h). q, y (B, T, H, D); k, v (B, T, Hkv, D); lse
// (B, H, T) f32. The backward writes all three gradients.
class Tensor;
void attention_forward(Tensor& y, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v);
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dy, const Tensor& y,
                        const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v);
// Writes k, v (R, Hkv, D) into the caches (batch, max_len, Hkv, D) at each row's sequence and
// position, then y (R, H, D) = decode_attention of q (R, H, D). row_seq, row_pos: (R) i32 on the
// caches' device.
void decode_attention(Tensor& y, Tensor& k_cache, Tensor& v_cache, const Tensor& q, const Tensor& k,
                      const Tensor& v, const Tensor& row_seq, const Tensor& row_pos);

}  // namespace lolcats
