#include "lolcats/model.h"

#include <algorithm>
#include <cstring>

#include "autograd/ops.h"
#include "data/safetensors.h"
#include "lolcats/feature_map.h"
#include "lolcats/ops.h"

namespace lolcats {

LolcatsModel::LolcatsModel(const Llama& b, const LolcatsConfig& c) : base(b), cfg(c) {
  const LlamaConfig& m = base.cfg;
  Fh = std::min(cfg.feature_half, m.head_dim);
  const bool t2r = cfg.feature_map == FeatureMapKind::t2r;
  F = t2r ? m.head_dim : 2 * Fh;
  for (int l : cfg.softmax_layers)
    ENSURE(l >= 0 && l < m.n_layers, "softmax layer %d does not exist (the model has %d layers)", l,
           m.n_layers);
  for (int l = 0; l < m.n_layers; l++) {
    LolcatsLayer L;
    L.converted = std::find(cfg.softmax_layers.begin(), cfg.softmax_layers.end(), l) ==
                  cfg.softmax_layers.end();
    // Made on the CPU, then placed beside the base weights, always in f32 (the LoLCATs ops read
    // f32 feature maps and window factors on every device).
    auto param = [&](const Tensor& t) { return leaf(t.to(base.device(), DType::f32), true); };
    if (L.converted) {
      const int cols = t2r ? F : Fh;  // W (H, D, cols), identity init (LOLCATS.md 2.1)
      auto identity = [&] {
        Tensor W = Tensor::empty({m.n_heads, m.head_dim, cols});
        hedgehog_identity_init(W.f32(), m.n_heads, m.head_dim, cols);
        return W;
      };
      L.wq_fm = param(identity());
      L.wk_fm = param(identity());
      if (t2r) {
        L.bq_fm = param(Tensor::zeros({m.n_heads, F}));
        L.bk_fm = param(Tensor::zeros({m.n_heads, F}));
      }
      L.wlogit = param(Tensor::from(std::vector<float>(m.n_heads, cfg.window_logit_init), {m.n_heads}));
    }
    layers.push_back(L);
  }
}

Var LolcatsModel::student_attention(int l, const Var& q, const Var& k, const Var& v) const {
  const LolcatsLayer& L = layers[l];
  if (!L.converted) return attention(q, k, v);
  return hybrid_attention(q, k, v, features(l, q, false), features(l, k, true), L.wlogit, cfg.variant, cfg.mask);
}

Var LolcatsModel::features(int l, const Var& x, bool key) const {
  const LolcatsLayer& L = layers[l];
  if (cfg.feature_map == FeatureMapKind::t2r) return key ? t2r(x, L.wk_fm, L.bk_fm) : t2r(x, L.wq_fm, L.bq_fm);
  return hedgehog(x, key ? L.wk_fm : L.wq_fm);
}

void LolcatsModel::feature_head(float* phi, const float* x, int l, int h, bool key, float* z) const {
  const LolcatsLayer& L = layers[l];
  const int D = base.cfg.head_dim;
  const float* W = (key ? L.wk_fm : L.wq_fm)->value.f32();
  if (cfg.feature_map == FeatureMapKind::t2r)  // one head: W[h] (D, F), b[h] (F)
    t2r_forward(phi, x, W + size_t(h) * D * F, (key ? L.bk_fm : L.bq_fm)->value.f32() + size_t(h) * F, 1, 1, 1,
                1, D, F);
  else
    hedgehog_row(phi, x, W + size_t(h) * D * Fh, 1, 1, D, Fh, z);
}

namespace {
// A converted layer's feature maps and window factors (none for a layer kept as softmax).
std::vector<Var> layer_parameters(const LolcatsLayer& L) {
  std::vector<Var> out;
  for (const Var& p : {L.wq_fm, L.wk_fm, L.bq_fm, L.bk_fm, L.wlogit})
    if (p) out.push_back(p);
  return out;
}
}  // namespace

int LolcatsModel::converted_layers() const {
  return int(std::count_if(layers.begin(), layers.end(), [](const LolcatsLayer& L) { return L.converted; }));
}

Var LolcatsModel::layer(int l, const Var& x, const RopeTables& rope) const {
  AttentionInputs in = base.attention_inputs(l, x, rope);
  return base.mlp_residual(l, base.attention_residual(l, x, student_attention(l, in.q, in.k, in.v)));
}

Var LolcatsModel::hidden(const Tensor& ids, Recompute recompute) const {
  // The tables first: they are uploaded, and an upload after the step's first kernel would wait.
  const RopeTables rope = base.rope_tables(int(ids.size(1)));
  Var x = base.embed(ids);
  for (int l = 0; l < base.cfg.n_layers; l++) {
    std::vector<Var> trainable = base.trainable_in_layer(l);  // what a recomputed layer depends on
    for (const Var& p : layer_parameters(layers[size_t(l)]))
      if (p->requires_grad) trainable.push_back(p);
    x = recomputed(recompute, [this, l, rope](const Var& h) { return layer(l, h, rope); }, x, trainable);
  }
  return x;
}

Var LolcatsModel::forward(const Tensor& ids) const { return base.logits(hidden(ids)); }

Var LolcatsModel::loss(const Tensor& ids, const Tensor& targets, Recompute recompute) const {
  Tensor t = base.step_targets(targets);  // before the step's first kernel, so the upload need not wait
  return base.loss(hidden(ids, recompute), t);
}

std::vector<std::pair<std::string, Var>> LolcatsModel::named_parameters() const {
  std::vector<std::pair<std::string, Var>> out;
  for (size_t l = 0; l < layers.size(); l++) {
    if (!layers[l].converted) continue;
    std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    out.push_back({p + "feature_map_q.mlp.layer", layers[l].wq_fm});
    out.push_back({p + "feature_map_k.mlp.layer", layers[l].wk_fm});
    if (layers[l].bq_fm) {
      out.push_back({p + "feature_map_q.mlp.bias", layers[l].bq_fm});
      out.push_back({p + "feature_map_k.mlp.bias", layers[l].bk_fm});
    }
    out.push_back({p + "window_factors", layers[l].wlogit});
  }
  return out;
}

std::vector<float> LolcatsModel::tail_logits(const std::vector<int32_t>& ids, int rows) const {
  const int T = int(ids.size()), C = base.cfg.d_model;
  ENSURE(rows >= 1 && rows <= T, "tail_logits: %d rows of a %d-token sequence", rows, T);
  NoGrad no_grad;
  Tensor h = hidden(Tensor::from_i32(ids, {1, T}))->value.to(Device::cpu, DType::f32);  // (1, T, C)
  Tensor tail = Tensor::empty({1, rows, C});
  std::memcpy(tail.f32(), h.f32() + size_t(T - rows) * C, size_t(rows) * C * sizeof(float));
  Tensor logits = base.logits(leaf(tail.to(base.device(), base.dtype())))->value.to(Device::cpu, DType::f32);
  return std::vector<float>(logits.f32(), logits.f32() + logits.numel());
}

void LolcatsModel::to(Device device) {
  for (const Var& p : parameters()) p->value = p->value.to(device, DType::f32);
}

std::vector<Var> LolcatsModel::parameters() const {
  std::vector<Var> out;
  for (auto& [name, v] : named_parameters()) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Tensor>> LolcatsModel::named_tensors() const {
  std::vector<std::pair<std::string, Tensor>> tensors;
  const int64_t H = base.cfg.n_heads;
  for (auto& [name, v] : named_parameters()) {
    bool window = name.size() >= 14 && name.compare(name.size() - 14, 14, "window_factors") == 0;
    tensors.push_back({name, window ? v->value.reshape({1, H, 1, 1}) : v->value});
  }
  return tensors;
}

void LolcatsModel::save(const std::string& path) const {
  save_safetensors(path, named_tensors(),
                   {{"format", "pt"}, {"lolcats_variant", variant_name(cfg.variant)},
                    {"feature_map", feature_map_name(cfg.feature_map)}});
}

void LolcatsModel::load(const std::string& path) {
  SafeTensorsFile f(path);
  auto fm = f.metadata().find("feature_map");
  ENSURE(fm == f.metadata().end() || fm->second == feature_map_name(cfg.feature_map),
         "%s holds %s feature maps, but this model uses %s (--feature-map)", path.c_str(),
         fm->second.c_str(), feature_map_name(cfg.feature_map));
  // named_tensors() views the parameters in their stored shapes (window factors as (1, H, 1, 1)).
  for (auto& [name, t] : named_tensors()) {
    ENSURE(f.has(name), "%s: missing %s (was it saved from a model with the same layers?)",
           path.c_str(), name.c_str());
    f.load_into(name, t);
  }
}

}  // namespace lolcats
