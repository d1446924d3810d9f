#include "nn/decode_device.h"

#include <algorithm>

#include "tensor/elementwise.h"
#include "tensor/embedding.h"
#include "tensor/matmul.h"
#include "tensor/rmsnorm.h"
#include "tensor/rope.h"

namespace lolcats {

namespace {

class DeviceDecodeTrunk : public DecodeTrunk {
 public:
  explicit DeviceDecodeTrunk(const Llama& m) : m_(m), inv_freq_(size_t(m.cfg.head_dim / 2)) {
    for (const LlamaLayer& L : m.layers)
      ENSURE(!L.lora_q.active() && !L.lora_k.active() && !L.lora_v.active() && !L.lora_o.active(),
             "decode on %s: merge the LoRA into the weights first (merge_lora)", device_name(m.device()));
    rope_inv_freq(inv_freq_.data(), m.cfg.head_dim, m.cfg.rope);
  }

  void embed(const int32_t* tokens, const StepRows& rows) override {
    const LlamaConfig& c = m_.cfg;
    const int C = c.d_model, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, R = rows.R;
    const Device dev = m_.device();
    R_ = R;
    auto act = [&](const Shape& shape) { return Tensor::empty(shape, m_.dtype(), dev); };
    x_ = act({R, C}), a_ = act({R, C}), rstd_ = Tensor::empty({R}, DType::f32, dev);
    q_ = act({1, R, H, D}), k_ = act({1, R, Hkv, D}), v_ = act({1, R, Hkv, D}), y_ = act({R, H, D});
    g_ = act({R, c.ffn}), u_ = act({R, c.ffn});
    // RoPE rows at each row's own position.
    Tensor cos_t = Tensor::empty({R, D / 2}), sin_t = Tensor::empty({R, D / 2});
    rope_tables(cos_t.f32(), sin_t.f32(), rows.pos.data(), R, D, inv_freq_.data());
    cos_ = cos_t.to(dev), sin_ = sin_t.to(dev);
    embedding_forward(x_, Tensor::from_i32(std::vector<int32_t>(tokens, tokens + R), {R}).to(dev), m_.wte->value);
  }

  Rows attention_inputs(int l) override {
    const LlamaConfig& c = m_.cfg;
    const LlamaLayer& L = m_.layers[size_t(l)];
    const int C = c.d_model, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim;
    // PyTorch: q, k, v = q_proj(norm(x)), k_proj(...), v_proj(...); rope(q, k)
    rmsnorm_forward(a_, rstd_, x_, L.attn_norm->value, c.norm_eps);
    linear(q_, a_, L.wq, H * D, C);
    linear(k_, a_, L.wk, Hkv * D, C);
    linear(v_, a_, L.wv, Hkv * D, C);
    rope_forward(q_, q_, cos_, sin_, RopeLayout::half_split);
    rope_forward(k_, k_, cos_, sin_, RopeLayout::half_split);
    // (R, H, D) views of the (1, R, H, D) RoPE operands
    return {q_.view(0, {R_, H, D}), k_.view(0, {R_, Hkv, D}), v_.view(0, {R_, Hkv, D}), y_};
  }

  void finish_layer(int l) override {
    const LlamaConfig& c = m_.cfg;
    const LlamaLayer& L = m_.layers[size_t(l)];
    const int C = c.d_model, HD = c.n_heads * c.head_dim, FF = c.ffn;
    // x = x + o_proj(y)
    linear(a_, y_.view(0, {R_, HD}), L.wo, C, HD);
    add_forward(x_, x_, a_);
    // x = x + down_proj(silu(gate_proj(m)) * up_proj(m)),  m = norm(x)
    rmsnorm_forward(a_, rstd_, x_, L.mlp_norm->value, c.norm_eps);
    linear(g_, a_, L.w_gate, FF, C);
    linear(u_, a_, L.w_up, FF, C);
    swiglu_forward(g_, g_, u_);
    linear(a_, g_, L.w_down, C, FF);
    add_forward(x_, x_, a_);
  }

  void logits(float* out, const StepRows& rows, Logits which) override {
    const LlamaConfig& c = m_.cfg;
    const int C = c.d_model, V = c.vocab;
    const Device dev = m_.device();
    // The rows whose logits are asked for: every row, or each sequence's last new one.
    Tensor last = x_;
    std::vector<int> last_of;  // sequences with new rows, in order
    if (which == Logits::last_row) {
      for (size_t b = 0; b < rows.n.size(); b++)
        if (rows.n[b] > 0) last_of.push_back(int(b));
      last = Tensor::empty({int64_t(last_of.size()), C}, m_.dtype(), dev);
      for (size_t i = 0; i < last_of.size(); i++) {
        const int b = last_of[i];
        last.rows(int64_t(i), 1).copy_from(x_.rows(rows.first[size_t(b)] + rows.n[size_t(b)] - 1, 1), "last row");
      }
    }
    const int N = int(last.size(0));
    Tensor normed = Tensor::empty({N, C}, m_.dtype(), dev), rstd = Tensor::empty({N}, DType::f32, dev);
    rmsnorm_forward(normed, rstd, last, m_.norm->value, c.norm_eps);
    Tensor logits = Tensor::empty({N, V}, DType::f32, dev);  // f32 logits (the head's product accumulates in f32)
    matmul_forward(logits, normed, m_.lm_head->value, 1, N, V, C, Transpose::b);
    Tensor host = logits.to(Device::cpu);
    if (which == Logits::every_row) {
      std::copy(host.f32(), host.f32() + host.numel(), out);
      return;
    }
    for (size_t i = 0; i < last_of.size(); i++)
      std::copy(host.f32() + i * V, host.f32() + (i + 1) * V, out + size_t(last_of[i]) * V);
  }

 private:
  // out (R, N) = in (R, K) W^T
  void linear(Tensor& out, const Tensor& in, const Var& W, int N, int K) const {
    matmul_forward(out, in, W->value, 1, R_, N, K, Transpose::b);
  }

  const Llama& m_;
  int R_ = 0;
  Tensor x_, a_, rstd_, q_, k_, v_, y_, g_, u_, cos_, sin_;  // this step's activations, on the device
  std::vector<double> inv_freq_;                             // (D/2) RoPE speeds
};

}  // namespace

std::unique_ptr<DecodeTrunk> make_device_decode_trunk(const Llama& model) {
  return std::make_unique<DeviceDecodeTrunk>(model);
}

}  // namespace lolcats
