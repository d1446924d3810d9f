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
  if (R > 8) return matmul_forward(y, x, W, 1, R, N, K, Transpose::b);
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
  matmul_forward(low.data(), x, lora.A->value.f32(), 1, R, r, K, Transpose::b);  // (R, r) = x A^T
  scale_forward(low.data(), low.data(), lora.scale, int64_t(R) * r);
  matmul_forward(y, low.data(), lora.B->value.f32(), 1, R, N, r, Transpose::b, Accumulate::yes);   // y += low B^T
}

void linear(float* y, const float* x, const Var& W, int R, int N, int K) {
  static const Lora none;
  std::vector<float> unused;
  linear(y, x, W, none, R, N, K, unused);
}

// The trunk of a step, as plain code over buffers that only grow.
class CpuDecodeTrunk : public DecodeTrunk {
 public:
  explicit CpuDecodeTrunk(const Llama& m) : m_(m), inv_freq_(size_t(m.cfg.head_dim / 2)) {
    ENSURE(m.device() == Device::cpu, "the CPU decode trunk needs the weights on the CPU (f32 or bf16)");
    rope_inv_freq(inv_freq_.data(), m.cfg.head_dim, m.cfg.rope);
  }

  void embed(const int32_t* tokens, const StepRows& rows) override {
    const LlamaConfig& c = m_.cfg;
    const int C = c.d_model, HD = c.n_heads * c.head_dim, KD = c.n_kv_heads * c.head_dim, D = c.head_dim;
    R_ = rows.R;
    const size_t R = size_t(R_);
    grow(x_, R * C), grow(a_, R * std::max(C, HD)), grow(q_, R * HD), grow(k_, R * KD), grow(v_, R * KD);
    grow(y_, R * HD), grow(g_, R * c.ffn), grow(u_, R * c.ffn), grow(rstd_, R);
    grow(cos_, R * (D / 2)), grow(sin_, R * (D / 2));
    if (m_.dtype() == DType::f32) {
      embedding_forward(x_.data(), tokens, m_.wte->value.f32(), R_, c.vocab, C);
    } else {
      for (size_t r = 0; r < R; r++) {
        const uint16_t* row = m_.wte->value.bf16() + size_t(tokens[r]) * C;
        for (int i = 0; i < C; i++) x_[r * C + size_t(i)] = bf16_to_f32(row[i]);
      }
    }
    rope_tables(cos_.data(), sin_.data(), rows.pos.data(), R_, D, inv_freq_.data());
  }

  Rows attention_inputs(int l) override {
    const LlamaConfig& c = m_.cfg;
    const LlamaLayer& L = m_.layers[size_t(l)];
    const int C = c.d_model, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim;
    // PyTorch: q, k, v = q_proj(norm(x)), k_proj(...), v_proj(...); rope(q, k)
    rmsnorm_forward(a_.data(), rstd_.data(), x_.data(), norm_weight(L.attn_norm, wnorm_), R_, C, c.norm_eps);
    linear(q_.data(), a_.data(), L.wq, L.lora_q, R_, H * D, C, low_);
    linear(k_.data(), a_.data(), L.wk, L.lora_k, R_, Hkv * D, C, low_);
    linear(v_.data(), a_.data(), L.wv, L.lora_v, R_, Hkv * D, C, low_);
    rope_forward(q_.data(), q_.data(), cos_.data(), sin_.data(), 1, R_, H, D, RopeLayout::half_split);  // row r: its position
    rope_forward(k_.data(), k_.data(), cos_.data(), sin_.data(), 1, R_, Hkv, D, RopeLayout::half_split);
    auto view = [&](std::vector<float>& b, int heads) { return Tensor::borrow(b.data(), {R_, heads, D}, DType::f32); };
    return {view(q_, H), view(k_, Hkv), view(v_, Hkv), view(y_, H)};
  }

  void finish_layer(int l) override {
    const LlamaConfig& c = m_.cfg;
    const LlamaLayer& L = m_.layers[size_t(l)];
    const int C = c.d_model, HD = c.n_heads * c.head_dim, FF = c.ffn;
    float *x = x_.data(), *a = a_.data();
    // x = x + o_proj(y)
    linear(a, y_.data(), L.wo, L.lora_o, R_, C, HD, low_);
    add_forward(x, x, a, int64_t(R_) * C);
    // x = x + down_proj(silu(gate_proj(m)) * up_proj(m)),  m = norm(x)
    rmsnorm_forward(a, rstd_.data(), x, norm_weight(L.mlp_norm, wnorm_), R_, C, c.norm_eps);
    linear(g_.data(), a, L.w_gate, R_, FF, C);
    linear(u_.data(), a, L.w_up, R_, FF, C);
    swiglu_forward(g_.data(), g_.data(), u_.data(), int64_t(R_) * FF);
    linear(a, g_.data(), L.w_down, R_, C, FF);
    add_forward(x, x, a, int64_t(R_) * C);
  }

  void logits(float* out, const StepRows& rows, Logits which) override {
    const LlamaConfig& c = m_.cfg;
    const int C = c.d_model, V = c.vocab;
    float *x = x_.data(), *a = a_.data();
    if (which == Logits::every_row) {  // every new row: (R, V), one product with the LM head
      rmsnorm_forward(a, rstd_.data(), x, norm_weight(m_.norm, wnorm_), R_, C, c.norm_eps);
      linear(out, a, m_.lm_head, R_, V, C);
      return;
    }
    // Logits of each sequence's last new row: gather, norm, one product with the LM head.
    const int B = int(rows.n.size());
    int B1 = 0;
    grow(last_, size_t(B) * C);
    for (int b = 0; b < B; b++) {
      const int n = rows.n[size_t(b)], r = rows.first[size_t(b)] + n - 1;
      if (n > 0) std::copy(x + size_t(r) * C, x + size_t(r + 1) * C, last_.data() + size_t(B1++) * C);
    }
    grow(logits_rows_, size_t(B1) * V);
    rmsnorm_forward(a, rstd_.data(), last_.data(), norm_weight(m_.norm, wnorm_), B1, C, c.norm_eps);
    linear(logits_rows_.data(), a, m_.lm_head, B1, V, C);
    for (int b = 0, i = 0; b < B; b++)
      if (rows.n[size_t(b)] > 0) {
        std::copy(logits_rows_.data() + size_t(i) * V, logits_rows_.data() + size_t(i + 1) * V, out + size_t(b) * V);
        i++;
      }
  }

 private:
  const Llama& m_;
  int R_ = 0;  // this step's rows
  // Scratch, grown to the largest step seen: X (R, d_model), A, Q, K, V, Y, gate and up (R, FF),
  // RoPE rows, norms' statistics, gathered last rows and their logits, a bf16 norm weight widened,
  // the LoRA's low-rank product.
  std::vector<float> x_, a_, q_, k_, v_, y_, g_, u_, cos_, sin_, rstd_, last_, logits_rows_, wnorm_, low_;
  std::vector<double> inv_freq_;  // (D/2) RoPE speeds of the model's config
};

}  // namespace

std::unique_ptr<DecodeTrunk> make_cpu_decode_trunk(const Llama& model) {
  return std::make_unique<CpuDecodeTrunk>(model);
}

}  // namespace lolcats
