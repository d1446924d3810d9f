// LoLCATs hybrid attention (LOLCATS.md 2.2): exact softmax over a small window of recent keys,
// linear attention (feature maps phi) over everything older, one shared normaliser.
//
// Per query head h, query i, key j <= i, s_ij = q_i . k_j / sqrt(D) (k, v: key head h / (H/Hkv)):
//   W(i)   window keys;  Lin(i) linear keys;  g_h = sigmoid(w_h)   (w: the trainable logit)
//   m_i    = max_{j in W(i)} s_ij                   (max over window scores only)
//   A_ij   = g_h exp(s_ij - m_i)      j in W(i)
//   B_ij   = phi_q(q_i) . phi_k(k_j)  j in Lin(i)
//   y_i    = (sum_W A_ij v_j + sum_Lin B_ij v_j) / Z_i,   Z_i = sum_W A_ij + sum_Lin B_ij  (no eps)
// Variants (blocks of 64 tokens aligned to token 0; b(i) = i / 64; the rule: lolcats/window.h):
//   terrace (default): W(i) = {j <= i : b(j) >= b(i) - 1},  Lin(i) = {j : b(j) <= b(i) - 2}
//   sw:                W(i) = {i-63 .. i},                   Lin(i) = {j <= i - 64}
//   linear:            W(i) = {},                            Lin(i) = {j <= i}   ("Hedgehog only")
// Terrace under the reference implementation's mask (AttentionMask::reference, `get_masks` in its
// linear_window_attention_tk.py), which the published checkpoints were trained and scored with:
//   T > 64:  the blocks are aligned to the END of the sequence: b(i) = (i + o) / 64 with
//            o = 64 ceil(T / 64) - T (it builds the mask for a whole number of blocks and keeps the
//            last T rows and columns); W and Lin as above with that b. Equal to paper when 64 | T.
//   T <= 64: one block, and every causal key is in BOTH W(i) and Lin(i): its weight is A_ij + B_ij.
// sw and linear have no blocks: the same under both masks.
//
// Linear time and memory: for the queries of block t, keys of blocks t-1 and t are handled
// exactly (a 64 x 128 tile, where the variant decides which pairs are window and which linear);
// every older key reaches them through the running state S = sum phi_k(k_j) v_j^T (F x D) and
// z = sum phi_k(k_j) (F), which holds blocks <= t-2. The O(T^2) definition above is kept as
// lolcats/hybrid_reference.h, and the tests compare the two.
//
// Backward, with dN_i = dy_i / Z_i and dZ_i = -(dy_i . y_i) / Z_i, every weight w_ij in {A, B}
// gets dw_ij = dN_i . v_j + dZ_i, and dv_j += w_ij dN_i. Then
//   window:  ds_ij = dw_ij A_ij;  the max moves all scores of row i: dm_i = -sum_j ds_ij, added to
//            the score at argmax (as torch.amax routes it);  dq, dk from ds like softmax attention;
//            dw_h += sum ds_ij (1 - g_h)          (dA/dw_h = A (1 - g_h))
//   linear:  dphi_q(i) += sum_j dw_ij phi_k(j),   dphi_k(j) += sum_i dw_ij phi_q(i)
// For the state part the same sums run as scans: forward over blocks for dphi_q (S dN_i + z dZ_i)
// and backward over blocks for dphi_k and dv, with P = sum phi_q dN^T over the query blocks that
// see key block u through the state (blocks >= u+2): dphi_k(j) += P v_j + p,  dv_j += P^T phi_k(j).
#pragma once
#include <cstdint>
#include <string>

#include "lolcats/window.h"

namespace lolcats {

HybridVariant parse_variant(const std::string& name);  // "terrace", "sw", "linear"
const char* variant_name(HybridVariant v);

enum class AttentionMask { paper, reference };  // see above: where terrace's blocks lie
AttentionMask parse_attention_mask(const std::string& name);  // "paper", "reference"

// Terrace's blocks for one sequence length: block u holds tokens [begin(u), end(u)). The paper's
// blocks start at token 0; the reference mask's (T > 64) end at token T, so block 0 is short.
struct HybridBlocks {
  int T, offset;  // offset o: block u starts at 64 u - o (clamped at 0)
  bool overlap;   // the reference mask at T <= 64: window pairs are linear pairs too
  HybridBlocks(int T, HybridVariant variant, AttentionMask mask);
  int count() const { return (T + offset + kHybridBlock - 1) / kHybridBlock; }
  int begin(int u) const { return u * kHybridBlock - offset > 0 ? u * kHybridBlock - offset : 0; }
  int end(int u) const { return (u + 1) * kHybridBlock - offset < T ? (u + 1) * kHybridBlock - offset : T; }
};

// Shapes: q (B, T, H, D); k, v (B, T, Hkv, D); phiq, phik (B, T, H, F); wlogit (H);
// outputs y (B, T, H, D) and the normaliser Z (B, H, T), which the backward reads. The window
// max m_i is not kept: the backward rebuilds each tile's scores anyway and needs the argmax too.
template <typename T>
void hybrid_attention_forward(T* y, T* Z, const T* q, const T* k, const T* v, const T* phiq,
                              const T* phik, const T* wlogit, int B, int T_, int H, int Hkv, int D,
                              int F, HybridVariant variant, AttentionMask mask = AttentionMask::paper);

// Gradients are written; any of dq, dk, dv, dphiq, dphik, dwlogit may be null (not wanted).
// dwlogit is a parameter gradient and accumulates.
template <typename T>
void hybrid_attention_backward(T* dq, T* dk, T* dv, T* dphiq, T* dphik, T* dwlogit, const T* dy,
                               const T* y, const T* Z, const T* q, const T* k,
                               const T* v, const T* phiq, const T* phik, const T* wlogit, int B,
                               int T_, int H, int Hkv, int D, int F, HybridVariant variant,
                               AttentionMask mask = AttentionMask::paper);


// Tensor-level entry points (tensor/device.h), shapes as above, read from the tensors: the CPU code
// above (f32) or its CUDA twin (cuda/hybrid_attention.h: q, k, v, y and their gradients f32 or bf16;
// features, Z and window logits f32). The reference mask runs on the CPU only (for scoring the
// published checkpoints); the cuda twin refuses it.
class Tensor;
void hybrid_attention_forward(Tensor& y, Tensor& Z, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& phiq, const Tensor& phik, const Tensor& wlogit, HybridVariant variant,
                              AttentionMask mask = AttentionMask::paper);
void hybrid_attention_backward(Tensor* dq, Tensor* dk, Tensor* dv, Tensor* dphiq, Tensor* dphik, Tensor* dwlogit,
                               const Tensor& dy, const Tensor& y, const Tensor& Z, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& phiq, const Tensor& phik, const Tensor& wlogit,
                               HybridVariant variant, AttentionMask mask = AttentionMask::paper);

}  // namespace lolcats
