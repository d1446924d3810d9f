#include "nn/llama.h"

#include <algorithm>
#include <cstring>

#include "autograd/ops.h"
#include "tensor/attention.h"

namespace lolcats {

Llama::Llama(const LlamaConfig& c, Device device, DType dtype) : cfg(c) {
  cfg.validate("model config");
  const int64_t V = cfg.vocab, C = cfg.d_model, H = cfg.n_heads, Hkv = cfg.n_kv_heads,
                D = cfg.head_dim, FF = cfg.ffn;
  std::vector<Shape> layer_shapes = {{C}, {H * D, C}, {Hkv * D, C}, {Hkv * D, C}, {C, H * D},
                                     {C}, {FF, C},    {FF, C},      {C, FF}};
  std::vector<Shape> all = {{V, C}, {C}};
  if (!cfg.tied_embeddings) all.push_back({V, C});
  for (int l = 0; l < cfg.n_layers; l++) all.insert(all.end(), layer_shapes.begin(), layer_shapes.end());
  arena_ = std::make_unique<Arena>("weights", Arena::bytes_for(all, dtype), dtype, device);
  auto w = [&](const Shape& s) { return leaf(arena_->alloc(s), false); };
  wte = w({V, C});
  norm = w({C});
  lm_head = cfg.tied_embeddings ? wte : w({V, C});
  for (int l = 0; l < cfg.n_layers; l++) {
    LlamaLayer L;
    L.attn_norm = w({C});
    L.wq = w({H * D, C});
    L.wk = w({Hkv * D, C});
    L.wv = w({Hkv * D, C});
    L.wo = w({C, H * D});
    L.mlp_norm = w({C});
    L.w_gate = w({FF, C});
    L.w_up = w({FF, C});
    L.w_down = w({C, FF});
    layers.push_back(L);
  }
}

std::vector<std::pair<std::string, Var>> Llama::named_parameters() const {
  std::vector<std::pair<std::string, Var>> out = {{"model.embed_tokens.weight", wte}};
  for (int l = 0; l < cfg.n_layers; l++) {
    const LlamaLayer& L = layers[l];
    std::string p = "model.layers." + std::to_string(l) + ".";
    out.insert(out.end(), {{p + "input_layernorm.weight", L.attn_norm},
                           {p + "self_attn.q_proj.weight", L.wq},
                           {p + "self_attn.k_proj.weight", L.wk},
                           {p + "self_attn.v_proj.weight", L.wv},
                           {p + "self_attn.o_proj.weight", L.wo},
                           {p + "post_attention_layernorm.weight", L.mlp_norm},
                           {p + "mlp.gate_proj.weight", L.w_gate},
                           {p + "mlp.up_proj.weight", L.w_up},
                           {p + "mlp.down_proj.weight", L.w_down}});
  }
  out.push_back({"model.norm.weight", norm});
  if (!cfg.tied_embeddings) out.push_back({"lm_head.weight", lm_head});
  return out;
}

namespace {
// One layer's weights, and its LoRA matrices where LoRA is attached.
std::vector<Var> layer_parameters(const LlamaLayer& L) {
  std::vector<Var> out = {L.attn_norm, L.wq, L.wk, L.wv, L.wo, L.mlp_norm, L.w_gate, L.w_up, L.w_down};
  for (const Lora* lora : {&L.lora_q, &L.lora_k, &L.lora_v, &L.lora_o})
    if (lora->active()) out.insert(out.end(), {lora->A, lora->B});
  return out;
}
}  // namespace

std::vector<Var> Llama::parameters() const {
  std::vector<Var> out;
  for (auto& [name, v] : named_parameters()) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Var>> Llama::add_lora(int rank, float alpha,
                                                         const std::vector<std::string>& targets,
                                                         uint64_t seed) {
  std::vector<std::pair<std::string, Var>> out;
  const int C = cfg.d_model, HD = cfg.n_heads * cfg.head_dim, KD = cfg.n_kv_heads * cfg.head_dim;
  for (const std::string& t : targets)
    ENSURE(t == "q" || t == "k" || t == "v" || t == "o", "unknown LoRA target \"%s\" (q, k, v, o)",
           t.c_str());
  for (int l = 0; l < cfg.n_layers; l++) {
    LlamaLayer& L = layers[l];
    struct Site { const char* name; Lora* lora; int in, out; };
    for (Site s : {Site{"q", &L.lora_q, C, HD}, Site{"k", &L.lora_k, C, KD}, Site{"v", &L.lora_v, C, KD},
                   Site{"o", &L.lora_o, HD, C}}) {
      if (std::find(targets.begin(), targets.end(), s.name) == targets.end()) continue;
      std::string p = "model.layers." + std::to_string(l) + ".self_attn." + s.name + "_proj.";
      *s.lora = make_lora(s.in, s.out, rank, alpha, lora_seed(seed, p + "lora_A.weight"));
      // Beside the weights, in their dtype (bf16 on the GPU: AdamW then keeps f32 masters).
      for (Var* w : {&s.lora->A, &s.lora->B}) (*w)->value = (*w)->value.to(device(), dtype());
      out.push_back({p + "lora_A.weight", s.lora->A});
      out.push_back({p + "lora_B.weight", s.lora->B});
    }
  }
  return out;
}

void Llama::merge_loras() {
  for (LlamaLayer& L : layers)
    for (auto [W, lora] : {std::pair{&L.wq, &L.lora_q}, {&L.wk, &L.lora_k}, {&L.wv, &L.lora_v}, {&L.wo, &L.lora_o}}) {
      merge_lora(*W, *lora);
      *lora = Lora{};
    }
}

void Llama::to(Device device, DType dtype) {
  ENSURE(!layers.empty() && !layers[0].lora_q.active() && !layers[0].lora_o.active(),
         "Llama::to: move the model before adding LoRA");
  if (device == this->device() && dtype == this->dtype()) return;
  std::vector<std::pair<std::string, Var>> params = named_parameters();
  std::vector<Shape> shapes;
  for (auto& [name, v] : params) shapes.push_back(v->value.shape());
  auto arena = std::make_unique<Arena>("weights", Arena::bytes_for(shapes, dtype), dtype, device);
  for (auto& [name, v] : params) {
    Tensor t = arena->alloc(v->value.shape());
    t.copy_from(v->value.to(v->value.device(), dtype), name);  // convert where the value is, then copy
    v->value = t;
  }
  arena_ = std::move(arena);  // frees the old weights (tied embeddings: one Var, moved once)
}

void Llama::set_requires_grad(bool on) {
  for (const Var& v : parameters()) v->requires_grad = on;
}

// Attention sub-block of one layer: a (B, T, C) normalised input -> (B, T, C), before the residual.
Var Llama::attention_block(const LlamaLayer& L, const Var& a, int B, int T, int start,
                           const AttentionFn* attention, int layer) const {
  const int H = cfg.n_heads, Hkv = cfg.n_kv_heads, D = cfg.head_dim;
  // RoPE tables for positions start .. start+T-1, on the weights' device.
  Tensor cos_t = Tensor::empty({0}, DType::f32, device()), sin_t = cos_t;
  rope_tables(cos_t, sin_t, start, T, D, cfg.rope);

  Var q = rope(reshape(linear_lora(a, L.wq, L.lora_q), {B, T, H, D}), cos_t, sin_t,
               RopeLayout::half_split);
  Var k = rope(reshape(linear_lora(a, L.wk, L.lora_k), {B, T, Hkv, D}), cos_t, sin_t,
               RopeLayout::half_split);
  Var v = reshape(linear_lora(a, L.wv, L.lora_v), {B, T, Hkv, D});
  Var y = attention ? (*attention)(layer, q, k, v) : lolcats::attention(q, k, v);  // (B, T, H, D)
  return linear_lora(reshape(y, {B, T, H * D}), L.wo, L.lora_o);
}

Var Llama::forward(const Tensor& ids) const { return forward_impl(ids, nullptr, 0, true); }

Var Llama::forward_with(const Tensor& ids, const AttentionFn& attention, int start_pos,
                        bool logits) const {
  return forward_impl(ids, &attention, start_pos, logits);
}

Var Llama::forward_impl(const Tensor& ids, const AttentionFn* attention, int start, bool want_logits) const {
  Var x = trunk(ids, attention, start);
  if (!want_logits) return x;
  const int B = int(ids.size(0)), T = int(ids.size(1));
  Var logits = linear(rmsnorm(x, norm, cfg.norm_eps), lm_head);  // (B, T, V)
  return reshape(logits, {int64_t(B) * T, cfg.vocab});
}

Var Llama::forward_loss(const Tensor& ids, const Tensor& targets, const AttentionFn* attention) const {
  Var x = rmsnorm(trunk(ids, attention, 0), norm, cfg.norm_eps);  // (B, T, C)
  return lm_head_cross_entropy(x, lm_head, targets.to(device()));
}

// Embedding and every layer: ids (B, T) -> hidden states (B, T, C), before the final norm.
Var Llama::trunk(const Tensor& ids_in, const AttentionFn* attention, int start) const {
  ENSURE(ids_in.ndim() == 2 && ids_in.dtype() == DType::i32, "forward: ids must be (B, T) i32, got %s",
         ids_in.str().c_str());
  const Tensor ids = ids_in.to(device());
  const int B = int(ids.size(0)), T = int(ids.size(1));
  Var x = embedding(ids, wte);  // (B, T, C)
  const bool recompute = recompute_layers && grad_enabled();
  // The recomputed layers run again in the backward, after the caller's attention stand-in may be
  // gone: they keep a copy of it.
  auto attention_copy = recompute && attention ? std::make_shared<AttentionFn>(*attention) : nullptr;
  for (int l = 0; l < cfg.n_layers; l++) {
    if (!recompute) {
      x = layer_forward(l, x, B, T, start, attention);
      continue;
    }
    std::vector<Var> trainable;
    for (const Var& p : layer_parameters(layers[l]))
      if (p->requires_grad) trainable.push_back(p);
    x = checkpoint([this, l, B, T, start, attention_copy](const Var& h) {
      return layer_forward(l, h, B, T, start, attention_copy.get());
    }, x, trainable);
  }
  return x;
}

// One decoder layer: x (B, T, C) -> x + attention(norm(x)), then + mlp(norm(.)).
Var Llama::layer_forward(int l, const Var& x_in, int B, int T, int start, const AttentionFn* attention) const {
  const LlamaLayer& L = layers[l];
  Var x = add(x_in, attention_block(L, rmsnorm(x_in, L.attn_norm, cfg.norm_eps), B, T, start, attention, l));
  Var m = rmsnorm(x, L.mlp_norm, cfg.norm_eps);
  // PyTorch: self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
  return add(x, linear(swiglu(linear(m, L.w_gate), linear(m, L.w_up)), L.w_down));
}

void permute_qk_rows(Tensor& weight, int n_heads, int D, bool to_hf) {
  check_shape(weight, {int64_t(n_heads) * D, weight.size(1)}, "q/k projection");
  const int C = int(weight.size(1));
  float* w = weight.f32();
  // Within a head, GGUF row 2i + j holds Hugging Face row j*D/2 + i (j = 0, 1; i < D/2).
  std::vector<float> head(size_t(D) * C);
  for (int h = 0; h < n_heads; h++) {
    float* rows = w + size_t(h) * D * C;
    std::memcpy(head.data(), rows, head.size() * sizeof(float));
    for (int i = 0; i < D / 2; i++)
      for (int j = 0; j < 2; j++) {
        int gguf_row = 2 * i + j, hf_row = j * (D / 2) + i;
        int dst = to_hf ? hf_row : gguf_row, src = to_hf ? gguf_row : hf_row;
        std::memcpy(rows + size_t(dst) * C, head.data() + size_t(src) * C, C * sizeof(float));
      }
  }
}

}  // namespace lolcats
