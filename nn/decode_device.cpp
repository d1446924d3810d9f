#include "nn/decode_device.h"

#include "nn/decode.h"

#include <algorithm>

#include "tensor/attention.h"
#include "tensor/elementwise.h"
#include "tensor/embedding.h"
#include "tensor/matmul.h"
#include "tensor/rmsnorm.h"
#include "tensor/rope.h"

namespace lolcats {

DeviceDecodeState::DeviceDecodeState(const Llama& m, int batch_, int max_len_, std::vector<bool> cached)
    : batch(batch_), max_len(max_len_), length(size_t(batch_), 0) {
  const LlamaConfig& c = m.cfg;
  ENSURE(batch > 0 && max_len > 0, "decode state: batch %d and max_len %d must be positive", batch, max_len);
  if (cached.empty()) cached.assign(size_t(c.n_layers), true);
  ENSURE(int(cached.size()) == c.n_layers, "decode state: %zu cache flags for %d layers", cached.size(), c.n_layers);
  int slots = 0;
  for (bool on : cached) cache_slot.push_back(on ? slots++ : -1);
  if (slots > 0) {
    k = Tensor::zeros({int64_t(slots) * batch, max_len, c.n_kv_heads, c.head_dim}, m.dtype(), m.device());
    v = Tensor::zeros({int64_t(slots) * batch, max_len, c.n_kv_heads, c.head_dim}, m.dtype(), m.device());
  }
  inv_freq.resize(size_t(c.head_dim / 2));
  rope_inv_freq(inv_freq.data(), c.head_dim, c.rope);
}

void llama_decode_step_device(const Llama& m, DeviceDecodeState& s, const int32_t* tokens, const int* n,
                              float* logits, const DeviceDecodeAttention& attention) {
  const LlamaConfig& c = m.cfg;
  const int C = c.d_model, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, FF = c.ffn, V = c.vocab;
  const int HD = H * D, KD = Hkv * D;
  const Device dev = m.device();
  const DType dt = m.dtype();
  const int R = plan_rows(s.length, n, s.max_len, s.k.defined(), s.row_seq, s.row_pos);
  if (R == 0) return;
  for (int r = 0; r < R; r++)
    ENSURE(tokens[r] >= 0 && tokens[r] < V, "decode: token id %d is outside [0, %d)", tokens[r], V);

  // The step's rows: ids, sequences and positions, and RoPE rows at each row's own position.
  auto upload_i32 = [&](const int32_t* p) {
    return Tensor::from_i32(std::vector<int32_t>(p, p + R), {R}).to(dev);
  };
  Tensor ids = upload_i32(tokens), seq = upload_i32(s.row_seq.data()), pos = upload_i32(s.row_pos.data());
  Tensor cos_t = Tensor::empty({R, D / 2}), sin_t = Tensor::empty({R, D / 2});
  rope_tables(cos_t.f32(), sin_t.f32(), s.row_pos.data(), R, D, s.inv_freq.data());
  cos_t = cos_t.to(dev), sin_t = sin_t.to(dev);

  auto act = [&](const Shape& shape) { return Tensor::empty(shape, dt, dev); };
  Tensor x = act({R, C}), a = act({R, C}), rstd = Tensor::empty({R}, DType::f32, dev);
  Tensor q = act({1, R, H, D}), k = act({1, R, Hkv, D}), v = act({1, R, Hkv, D}), y = act({R, H, D});
  Tensor g = act({R, FF}), u = act({R, FF});
  // (R, H, D) views of the (1, R, H, D) RoPE operands
  Tensor q3 = q.view(0, {R, H, D}), k3 = k.view(0, {R, Hkv, D}), v3 = v.view(0, {R, Hkv, D});
  auto linear = [&](Tensor& out, const Tensor& in, const Var& W, int N, int K) {  // out (R, N) = in (R, K) W^T
    matmul_forward(out, in, W->value, 1, R, N, K, false, true, false);
  };

  embedding_forward(x, ids, m.wte->value);
  for (int l = 0; l < c.n_layers; l++) {
    const LlamaLayer& L = m.layers[size_t(l)];
    ENSURE(!L.lora_q.active() && !L.lora_k.active() && !L.lora_v.active() && !L.lora_o.active(),
           "decode on %s: merge the LoRA into the weights first (merge_lora)", device_name(dev));
    // PyTorch: q, k, v = q_proj(norm(x)), k_proj(...), v_proj(...); rope(q, k)
    rmsnorm_forward(a, rstd, x, L.attn_norm->value, c.norm_eps);
    linear(q, a, L.wq, HD, C);
    linear(k, a, L.wk, KD, C);
    linear(v, a, L.wv, KD, C);
    rope_forward(q, q, cos_t, sin_t, RopeLayout::half_split);
    rope_forward(k, k, cos_t, sin_t, RopeLayout::half_split);
    const int slot = s.cache_slot[size_t(l)];
    if (slot < 0) {
      ENSURE(bool(attention), "decode: layer %d has no KV cache and no attention was given for it", l);
      attention(l, y, q3, k3, v3);
    } else {
      const int64_t per = int64_t(s.batch) * s.max_len * KD;  // one layer's cache
      Tensor kc = s.k.view(slot * per, {s.batch, s.max_len, Hkv, D});
      Tensor vc = s.v.view(slot * per, {s.batch, s.max_len, Hkv, D});
      decode_attention(y, kc, vc, q3, k3, v3, seq, pos);
    }
    // x = x + o_proj(y)
    linear(a, y.view(0, {R, HD}), L.wo, C, HD);
    add_forward(x, x, a);
    // x = x + down_proj(silu(gate_proj(m)) * up_proj(m)),  m = norm(x)
    rmsnorm_forward(a, rstd, x, L.mlp_norm->value, c.norm_eps);
    linear(g, a, L.w_gate, FF, C);
    linear(u, a, L.w_up, FF, C);
    swiglu_forward(g, g, u);
    linear(a, g, L.w_down, C, FF);
    add_forward(x, x, a);
  }
  // Logits (f32) of each sequence's last new row: gather, norm, one product with the LM head.
  std::vector<int> last_of;  // sequences with new rows, in order
  for (int b = 0; b < s.batch; b++)
    if (n[b] > 0) last_of.push_back(b);
  const int B1 = int(last_of.size());
  Tensor last = act({B1, C}), normed = act({B1, C}), rstd1 = Tensor::empty({B1}, DType::f32, dev);
  for (int i = 0, r = 0, b = 0; b < s.batch; r += n[b], b++)
    if (n[b] > 0) last.rows(i++, 1).copy_from(x.rows(r + n[b] - 1, 1), "last row");
  rmsnorm_forward(normed, rstd1, last, m.norm->value, c.norm_eps);
  Tensor out = Tensor::empty({B1, V}, DType::f32, dev);
  matmul_forward(out, normed, m.lm_head->value, 1, B1, V, C, false, true, false);
  Tensor host = out.to(Device::cpu);
  for (int i = 0; i < B1; i++) {
    const int b = last_of[size_t(i)];
    std::copy(host.f32() + size_t(i) * V, host.f32() + size_t(i + 1) * V, logits + size_t(b) * V);
    s.length[size_t(b)] += n[b];
  }
}

}  // namespace lolcats
