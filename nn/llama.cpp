#include "nn/llama.h"

#include <algorithm>
#include <cstring>

#include "autograd/ops.h"
#include "tensor/loss.h"
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

// ---- the pieces -------------------------------------------------------------------------------

Var Llama::embed(const Tensor& ids) const {
  ENSURE(ids.ndim() == 2 && ids.dtype() == DType::i32, "forward: ids must be (B, T) i32, got %s",
         ids.str().c_str());
  return embedding(ids, wte);  // (B, T, C); host ids are checked and uploaded once, in the lookup
}

RopeTables Llama::rope_tables(int T) const {
  RopeTables r{Tensor::empty({0}, DType::f32, device()), Tensor::empty({0}, DType::f32, device())};
  lolcats::rope_tables(r.cos, r.sin, 0, T, cfg.head_dim, cfg.rope);
  return r;
}

AttentionInputs Llama::attention_inputs(int l, const Var& x, const RopeTables& rope) const {
  const LlamaLayer& L = layers[size_t(l)];
  const int64_t B = x->value.size(0), T = x->value.size(1), H = cfg.n_heads, Hkv = cfg.n_kv_heads,
                D = cfg.head_dim;
  // PyTorch: q, k, v = q_proj(norm(x)), k_proj(norm(x)), v_proj(norm(x)); apply_rotary_pos_emb(q, k)
  Var a = rmsnorm(x, L.attn_norm, cfg.norm_eps);
  Var q = reshape(linear_lora(a, L.wq, L.lora_q), {B, T, H, D});
  Var k = reshape(linear_lora(a, L.wk, L.lora_k), {B, T, Hkv, D});
  Var v = reshape(linear_lora(a, L.wv, L.lora_v), {B, T, Hkv, D});
  return {lolcats::rope(q, rope.cos, rope.sin, RopeLayout::half_split),
          lolcats::rope(k, rope.cos, rope.sin, RopeLayout::half_split), v};
}

Var Llama::attention_residual(int l, const Var& x, const Var& y) const {
  const int64_t B = y->value.size(0), T = y->value.size(1);
  // PyTorch: x + o_proj(y.reshape(B, T, H * D))
  return add(x, linear_lora(reshape(y, {B, T, int64_t(cfg.n_heads) * cfg.head_dim}), layers[size_t(l)].wo,
                            layers[size_t(l)].lora_o));
}

Var Llama::mlp_residual(int l, const Var& x) const {
  const LlamaLayer& L = layers[size_t(l)];
  Var m = rmsnorm(x, L.mlp_norm, cfg.norm_eps);
  // PyTorch: x + down_proj(act_fn(gate_proj(m)) * up_proj(m))
  return add(x, linear(swiglu(linear(m, L.w_gate), linear(m, L.w_up)), L.w_down));
}

Var Llama::layer(int l, const Var& x, const RopeTables& rope) const {
  AttentionInputs in = attention_inputs(l, x, rope);
  return mlp_residual(l, attention_residual(l, x, attention(in.q, in.k, in.v)));
}

Var Llama::logits(const Var& x) const {
  const int64_t rows = x->value.numel() / cfg.d_model;
  return reshape(linear(rmsnorm(x, norm, cfg.norm_eps), lm_head), {rows, cfg.vocab});
}

Var Llama::loss(const Var& x, const Tensor& targets) const {
  return lm_head_cross_entropy(rmsnorm(x, norm, cfg.norm_eps), lm_head, targets);  // uploads host targets
}

Tensor Llama::step_targets(const Tensor& targets) const { return checked_targets(targets, cfg.vocab, device()); }

std::vector<Var> Llama::trainable_in_layer(int l) const {
  const LlamaLayer& L = layers[size_t(l)];
  std::vector<Var> all = {L.attn_norm, L.wq, L.wk, L.wv, L.wo, L.mlp_norm, L.w_gate, L.w_up, L.w_down};
  for (const Lora* lora : {&L.lora_q, &L.lora_k, &L.lora_v, &L.lora_o})
    if (lora->active()) all.insert(all.end(), {lora->A, lora->B});
  std::vector<Var> out;
  for (const Var& p : all)
    if (p->requires_grad) out.push_back(p);
  return out;
}

// ---- the plain loop ---------------------------------------------------------------------------

Var Llama::hidden(const Tensor& ids, Recompute recompute) const {
  // The tables first: they are uploaded, and an upload after the step's first kernel would wait.
  const RopeTables rope = rope_tables(int(ids.size(1)));
  Var x = embed(ids);
  for (int l = 0; l < cfg.n_layers; l++)
    x = recomputed(recompute, [this, l, rope](const Var& h) { return layer(l, h, rope); }, x, trainable_in_layer(l));
  return x;
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
