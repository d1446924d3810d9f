#include "nn/decode.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include <Eigen/Core>

#include "tensor/attention.h"
#include "tensor/bf16.h"
#include "tensor/elementwise.h"
#include "tensor/embedding.h"
#include "tensor/matmul.h"
#include "tensor/rmsnorm.h"
#include "tensor/rope.h"

namespace lolcats {

LlamaDecodeState::LlamaDecodeState(const LlamaConfig& c, int batch_, int max_len_, std::vector<bool> cached)
    : batch(batch_), max_len(max_len_), length(size_t(batch_), 0) {
  ENSURE(batch > 0 && max_len > 0, "decode state: batch %d and max_len %d must be positive", batch, max_len);
  if (cached.empty()) cached.assign(size_t(c.n_layers), true);
  ENSURE(int(cached.size()) == c.n_layers, "decode state: %zu cache flags for %d layers", cached.size(), c.n_layers);
  int slots = 0;
  for (bool on : cached) cache_slot.push_back(on ? slots++ : -1);
  size_t n = size_t(slots) * size_t(batch) * size_t(max_len) * size_t(c.n_kv_heads) * size_t(c.head_dim);
  k.assign(n, 0.0f);
  v.assign(n, 0.0f);
  inv_freq.resize(size_t(c.head_dim / 2));
  rope_inv_freq(inv_freq.data(), c.head_dim, c.rope);
}

void LlamaDecodeState::copy_sequence(int from, int to) {
  ENSURE(from >= 0 && from < batch && to >= 0 && to < batch, "copy_sequence: %d -> %d outside a batch of %d", from,
         to, batch);
  if (from == to) return;
  const int slots = int(std::count_if(cache_slot.begin(), cache_slot.end(), [](int i) { return i >= 0; }));
  if (slots > 0) {
    // k, v: (slots, batch, max_len, KD); only the `from` sequence's first length rows matter.
    const size_t KD = k.size() / (size_t(slots) * size_t(batch) * size_t(max_len));
    const size_t rows = size_t(length[size_t(from)]) * KD;
    for (int sl = 0; sl < slots; sl++) {
      const size_t src = (size_t(sl) * batch + size_t(from)) * max_len * KD;
      const size_t dst = (size_t(sl) * batch + size_t(to)) * max_len * KD;
      std::copy(k.begin() + ptrdiff_t(src), k.begin() + ptrdiff_t(src + rows), k.begin() + ptrdiff_t(dst));
      std::copy(v.begin() + ptrdiff_t(src), v.begin() + ptrdiff_t(src + rows), v.begin() + ptrdiff_t(dst));
    }
  }
  length[size_t(to)] = length[size_t(from)];
}

int plan_rows(const std::vector<int>& length, const int* n, int max_len, bool bounded, std::vector<int32_t>& row_seq,
              std::vector<int32_t>& row_pos) {
  int R = 0;
  for (size_t b = 0; b < length.size(); b++) {
    ENSURE(n[b] >= 0 && (!bounded || length[b] + n[b] <= max_len),
           "decode: sequence %zu holds %d tokens, %d more do not fit in %d", b, length[b], n[b], max_len);
    R += n[b];
  }
  row_seq.resize(size_t(R));
  row_pos.resize(size_t(R));
  for (size_t b = 0, r = 0; b < length.size(); b++)
    for (int i = 0; i < n[b]; i++, r++) row_seq[r] = int32_t(b), row_pos[r] = length[b] + i;
  return R;
}

namespace {

// Grows a scratch buffer to at least n values (never shrinks: the steady state allocates nothing).
void grow(std::vector<float>& b, size_t n) {
  if (b.size() < n) b.resize(n);
}

// A norm's weight (C) as f32: itself, or widened from bf16 into `scratch`.
const float* norm_weight(const Var& v, std::vector<float>& scratch) {
  const Tensor& t = v->value;
  if (t.dtype() == DType::f32) return t.f32();
  grow(scratch, size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); i++) scratch[size_t(i)] = bf16_to_f32(t.bf16()[i]);
  return scratch.data();
}

// y (R, N) = x (R, K) @ W (N, K)^T. With few rows (decode) the product is a matrix-vector one and
// Eigen runs it on one thread, leaving memory bandwidth unused: split W's rows over the threads
// instead (each reads its slice of W once). Otherwise the threaded GEMM of matmul_forward.
void linear_f32(float* y, const float* x, const float* W, int R, int N, int K) {
  if (R > 8) return matmul_forward(y, x, W, 1, R, N, K, false, true, false);
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMat> X(x, R, K);
  const int block = 256;
#pragma omp parallel for schedule(static)
  for (int n0 = 0; n0 < N; n0 += block) {
    int nb = std::min(block, N - n0);
    Eigen::Map<const RowMat> Wb(W + size_t(n0) * K, nb, K);
    Eigen::Map<RowMat, 0, Eigen::OuterStride<>> Y(y + n0, R, nb, Eigen::OuterStride<>(N));
    Y.noalias() = X * Wb.transpose();
  }
}

// The same with W stored in bf16 (half the bytes to read, the point of it in decode): each thread
// widens a block of W's rows to f32 in a buffer that stays in its cache, then multiplies.
void linear_bf16(float* y, const float* x, const uint16_t* W, int R, int N, int K) {
  if (R <= 8) {  // decode: one pass over W, each row widened in registers (SIMD reductions)
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
      const uint16_t* wn = W + size_t(n) * K;
      for (int r = 0; r < R; r++) {
        const float* xr = x + size_t(r) * K;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int k = 0; k < K; k++) acc += xr[k] * bf16_to_f32(wn[k]);
        y[size_t(r) * N + size_t(n)] = acc;
      }
    }
    return;
  }
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMat> X(x, R, K);
  const int block = 64;
#pragma omp parallel
  {
    static thread_local std::vector<float> wide;  // grows once per thread: no allocation per token
    grow(wide, size_t(block) * K);
#pragma omp for schedule(static)
    for (int n0 = 0; n0 < N; n0 += block) {
      int nb = std::min(block, N - n0);
      const uint16_t* src = W + size_t(n0) * K;
      for (size_t i = 0; i < size_t(nb) * K; i++) wide[i] = bf16_to_f32(src[i]);
      Eigen::Map<const RowMat> Wb(wide.data(), nb, K);
      Eigen::Map<RowMat, 0, Eigen::OuterStride<>> Y(y + n0, R, nb, Eigen::OuterStride<>(N));
      Y.noalias() = X * Wb.transpose();
    }
  }
}

// y (R, N) = x (R, K) @ W^T for a weight stored in f32 or bf16, plus an active LoRA's
// (alpha / r) (x A^T) B^T, through `low` (R, r) scratch.
void linear(float* y, const float* x, const Var& W, const Lora& lora, int R, int N, int K,
            std::vector<float>& low) {
  const Tensor& t = W->value;
  if (t.dtype() == DType::f32) linear_f32(y, x, t.f32(), R, N, K);
  else linear_bf16(y, x, t.bf16(), R, N, K);
  if (!lora.active()) return;
  ENSURE(lora.A->value.dtype() == DType::f32 && lora.A->value.device() == Device::cpu,
         "decode: LoRA weights must be f32 on the CPU");
  const int r = int(lora.A->value.size(0));
  grow(low, size_t(R) * r);
  matmul_forward(low.data(), x, lora.A->value.f32(), 1, R, r, K, false, true, false);  // (R, r) = x A^T
  scale_forward(low.data(), low.data(), lora.scale, int64_t(R) * r);
  matmul_forward(y, low.data(), lora.B->value.f32(), 1, R, N, r, false, true, true);   // y += low B^T
}

void linear(float* y, const float* x, const Var& W, int R, int N, int K) {
  static const Lora none;
  std::vector<float> unused;
  linear(y, x, W, none, R, N, K, unused);
}

}  // namespace

void llama_decode_step(const Llama& m, LlamaDecodeState& s, const int32_t* tokens, const int* n,
                       float* logits, const DecodeAttention& attention) {
  const LlamaConfig& c = m.cfg;
  ENSURE(m.device() == Device::cpu, "llama_decode_step runs on the CPU (weights in f32 or bf16)");
  const int C = c.d_model, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, FF = c.ffn, V = c.vocab;
  const int HD = H * D, KD = Hkv * D;
  const bool any_cache = std::any_of(s.cache_slot.begin(), s.cache_slot.end(), [](int i) { return i >= 0; });
  const int R = plan_rows(s.length, n, s.max_len, any_cache, s.row_seq, s.row_pos);
  if (R == 0) return;
  grow(s.x, size_t(R) * C);
  grow(s.a, size_t(R) * std::max(C, HD));
  grow(s.q, size_t(R) * HD);
  grow(s.kn, size_t(R) * KD);
  grow(s.vn, size_t(R) * KD);
  grow(s.y, size_t(R) * HD);
  grow(s.g, size_t(R) * FF);
  grow(s.u, size_t(R) * FF);
  grow(s.cos_t, size_t(R) * (D / 2));
  grow(s.sin_t, size_t(R) * (D / 2));
  grow(s.rstd, size_t(R));
  float* rstd = s.rstd.data();

  if (m.dtype() == DType::f32) {
    embedding_forward(s.x.data(), tokens, m.wte->value.f32(), R, V, C);
  } else {
    for (int r = 0; r < R; r++) {
      ENSURE(tokens[r] >= 0 && tokens[r] < V, "decode: token id %d is outside [0, %d)", tokens[r], V);
      const uint16_t* row = m.wte->value.bf16() + size_t(tokens[r]) * C;
      for (int i = 0; i < C; i++) s.x[size_t(r) * C + size_t(i)] = bf16_to_f32(row[i]);
    }
  }
  rope_tables(s.cos_t.data(), s.sin_t.data(), s.row_pos.data(), R, D, s.inv_freq.data());

  float *x = s.x.data(), *a = s.a.data(), *q = s.q.data(), *kn = s.kn.data(), *vn = s.vn.data();
  for (int l = 0; l < c.n_layers; l++) {
    const LlamaLayer& L = m.layers[size_t(l)];
    // PyTorch: q, k, v = q_proj(norm(x)), k_proj(...), v_proj(...); rope(q, k)
    rmsnorm_forward(a, rstd, x, norm_weight(L.attn_norm, s.wnorm), R, C, c.norm_eps);
    linear(q, a, L.wq, L.lora_q, R, HD, C, s.low);
    linear(kn, a, L.wk, L.lora_k, R, KD, C, s.low);
    linear(vn, a, L.wv, L.lora_v, R, KD, C, s.low);
    rope_forward(q, q, s.cos_t.data(), s.sin_t.data(), 1, R, H, D, RopeLayout::half_split);  // row r: its position
    rope_forward(kn, kn, s.cos_t.data(), s.sin_t.data(), 1, R, Hkv, D, RopeLayout::half_split);
    const int slot = s.cache_slot[size_t(l)];
    if (slot < 0) {  // no cache: the caller's attention (a linearized layer)
      ENSURE(bool(attention), "decode: layer %d has no KV cache and no attention was given for it", l);
      attention(l, s.y.data(), q, kn, vn, R);
    } else {
      float* kc = s.k.data() + size_t(slot) * s.batch * s.max_len * KD;
      float* vc = s.v.data() + size_t(slot) * s.batch * s.max_len * KD;
      for (int r = 0; r < R; r++) {
        size_t at = (size_t(s.row_seq[size_t(r)]) * s.max_len + size_t(s.row_pos[size_t(r)])) * KD;
        std::copy(kn + size_t(r) * KD, kn + size_t(r + 1) * KD, kc + at);
        std::copy(vn + size_t(r) * KD, vn + size_t(r + 1) * KD, vc + at);
      }
      decode_attention(s.y.data(), q, kc, vc, s.row_seq.data(), s.row_pos.data(), R, H, Hkv, D, s.max_len);
    }
    // x = x + o_proj(y)
    linear(a, s.y.data(), L.wo, L.lora_o, R, C, HD, s.low);
    add_forward(x, x, a, int64_t(R) * C);
    // x = x + down_proj(silu(gate_proj(m)) * up_proj(m)),  m = norm(x)
    rmsnorm_forward(a, rstd, x, norm_weight(L.mlp_norm, s.wnorm), R, C, c.norm_eps);
    linear(s.g.data(), a, L.w_gate, R, FF, C);
    linear(s.u.data(), a, L.w_up, R, FF, C);
    swiglu_forward(s.g.data(), s.g.data(), s.u.data(), int64_t(R) * FF);
    linear(a, s.g.data(), L.w_down, R, C, FF);
    add_forward(x, x, a, int64_t(R) * C);
  }
  if (s.every_row_logits) {  // every new row: (R, V), one product with the LM head
    rmsnorm_forward(a, rstd, x, norm_weight(m.norm, s.wnorm), R, C, c.norm_eps);
    linear(logits, a, m.lm_head, R, V, C);
    for (int b = 0; b < s.batch; b++) s.length[size_t(b)] += n[b];
    return;
  }
  // Logits of each sequence's last new row: gather, norm, one product with the LM head.
  int B1 = 0;
  grow(s.last, size_t(s.batch) * C);
  for (int b = 0, r = 0; b < s.batch; r += n[b], b++)
    if (n[b] > 0) std::copy(x + size_t(r + n[b] - 1) * C, x + size_t(r + n[b]) * C, s.last.data() + size_t(B1++) * C);
  grow(s.logits_rows, size_t(B1) * V);
  rmsnorm_forward(a, rstd, s.last.data(), norm_weight(m.norm, s.wnorm), B1, C, c.norm_eps);
  linear(s.logits_rows.data(), a, m.lm_head, B1, V, C);
  for (int b = 0, i = 0; b < s.batch; b++) {
    if (n[b] == 0) continue;
    std::copy(s.logits_rows.data() + size_t(i) * V, s.logits_rows.data() + size_t(i + 1) * V, logits + size_t(b) * V);
    i++;
    s.length[size_t(b)] += n[b];
  }
}

}  // namespace lolcats
