#include "lolcats/reference_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "data/torch_pt.h"
#include "lolcats/export.h"

namespace lolcats {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> split_paths(const std::string& spec) {
  std::vector<std::string> out;
  std::stringstream in(spec);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + ")";
}

// peft's names -> ours: "base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight"
// -> "model.layers.3.self_attn.q_proj.lora_A.weight".
std::string normalize(std::string n) {
  const std::string wrapper = "base_model.model.";
  if (n.compare(0, wrapper.size(), wrapper) == 0) n = n.substr(wrapper.size());
  for (const char* ab : {".lora_A.", ".lora_B."}) {
    const std::string adapter = std::string(ab) + "default.";
    const size_t at = n.find(adapter);
    if (at != std::string::npos) n.replace(at, adapter.size(), ab);
  }
  return n;
}

// "model.layers.{i}.self_attn.{rest}" with a known rest -> layer and rest.
bool parse_key(const std::string& n, int& layer, std::string& rest) {
  const std::string head = "model.layers.";
  if (n.compare(0, head.size(), head) != 0) return false;
  size_t dot = n.find('.', head.size());
  if (dot == std::string::npos || dot == head.size() || dot - head.size() > 6) return false;
  for (size_t i = head.size(); i < dot; i++)
    if (n[i] < '0' || n[i] > '9') return false;
  layer = std::stoi(n.substr(head.size(), dot - head.size()));
  const std::string attn = ".self_attn.";
  if (n.compare(dot, attn.size(), attn) != 0) return false;
  rest = n.substr(dot + attn.size());
  static const std::set<std::string> known = [] {
    std::set<std::string> k = {"feature_map_q.mlp.layer", "feature_map_k.mlp.layer", "feature_map_q.mlp.bias",
                               "feature_map_k.mlp.bias", "window_factors"};
    for (const char* t : {"q", "k", "v", "o"})
      for (const char* ab : {"A", "B"}) k.insert(std::string(t) + "_proj.lora_" + ab + ".weight");
    return k;
  }();
  return known.count(rest) > 0;
}

struct Source {
  const TorchCheckpoint* file;
  std::string name;  // as stored
};

}  // namespace

bool is_reference_checkpoint(const std::string& spec) {
  std::vector<std::string> paths = split_paths(spec);
  if (paths.empty()) return false;
  for (const std::string& p : paths)
    if (!ends_with(p, ".pt") && !ends_with(p, ".pth")) return false;
  return true;
}

LinearizedModel load_reference_checkpoints(const std::string& spec, const std::string& base_model,
                                           const ReferenceOptions& o) {
  std::vector<std::unique_ptr<TorchCheckpoint>> files;
  std::map<std::string, Source> tensors;  // our name -> where it is stored (a later file wins)
  for (const std::string& path : split_paths(spec)) {
    files.push_back(std::make_unique<TorchCheckpoint>(path));
    for (const std::string& name : files.back()->names()) tensors[normalize(name)] = {files.back().get(), name};
  }
  ENSURE(!files.empty(), "--linearized: no checkpoint named");

  LinearizedModel out;
  out.base_model = base_model;
  out.base = Llama::load(base_model);
  const LlamaConfig& c = out.base->cfg;
  const int L = c.n_layers;
  std::vector<bool> converted(static_cast<size_t>(L), false);
  std::vector<std::set<std::string>> parts(static_cast<size_t>(L));  // per layer: the tensors present
  for (const auto& [name, src] : tensors) {
    int l = -1;
    std::string rest;
    ENSURE(parse_key(name, l, rest),
           "%s: unexpected tensor %s (a LoLCATs checkpoint holds feature maps, window factors and LoRA)",
           src.file->path().c_str(), src.name.c_str());
    ENSURE(l < L, "%s: tensor %s is for layer %d, but the base model %s has %d layers (a checkpoint of "
           "another model?)", src.file->path().c_str(), src.name.c_str(), l, base_model.c_str(), L);
    parts[size_t(l)].insert(rest);
    if (rest == "feature_map_q.mlp.layer") converted[size_t(l)] = true;
  }

  // Reads tensor `name` into dst after checking its shape against the base model's.
  auto load = [&](const std::string& name, Tensor& dst) {
    auto it = tensors.find(name);
    ENSURE(it != tensors.end(), "%s: no tensor %s", spec.c_str(), name.c_str());
    const TorchCheckpoint& f = *it->second.file;
    const std::vector<int64_t>& have = f.info(it->second.name).shape;
    std::vector<int64_t> want(dst.shape().dims, dst.shape().dims + dst.ndim());
    ENSURE(have == want, "%s: %s has shape %s, but the base model %s needs %s (a checkpoint of another model?)",
           f.path().c_str(), it->second.name.c_str(), shape_str(have).c_str(), base_model.c_str(),
           shape_str(want).c_str());
    f.load_into(it->second.name, dst);
  };

  // ---- the attention: which layers, which feature map, Fh -----------------------------------------------
  LolcatsConfig cfg;
  cfg.variant = o.variant;
  int first = -1;
  for (int l = 0; l < L; l++) {
    const std::set<std::string>& p = parts[size_t(l)];
    const bool fm = p.count("feature_map_q.mlp.layer") || p.count("feature_map_k.mlp.layer") ||
                    p.count("window_factors") || p.count("feature_map_q.mlp.bias") || p.count("feature_map_k.mlp.bias");
    if (!converted[size_t(l)]) {
      ENSURE(!fm, "%s: layer %d has attention parameters but no feature_map_q.mlp.layer", spec.c_str(), l);
      cfg.softmax_layers.push_back(l);
      continue;
    }
    for (const char* need : {"feature_map_k.mlp.layer", "window_factors"})
      ENSURE(p.count(need), "%s: layer %d has a feature map but no %s", spec.c_str(), l, need);
    const bool bias = p.count("feature_map_q.mlp.bias") > 0;
    ENSURE(bias == (p.count("feature_map_k.mlp.bias") > 0), "%s: layer %d has a bias on one feature map only",
           spec.c_str(), l);
    const FeatureMapKind kind = bias ? FeatureMapKind::t2r : FeatureMapKind::hedgehog;
    const Source& q = tensors.at("model.layers." + std::to_string(l) + ".self_attn.feature_map_q.mlp.layer");
    const std::vector<int64_t>& shape = q.file->info(q.name).shape;
    ENSURE(shape.size() == 3, "%s: %s has shape %s, not (H, D, features)", q.file->path().c_str(), q.name.c_str(),
           shape_str(shape).c_str());
    if (first < 0) {
      first = l;
      cfg.feature_map = kind;
      cfg.feature_half = int(shape[2]);
    }
    ENSURE(kind == cfg.feature_map && shape[2] == cfg.feature_half,
           "%s: layer %d's feature map (%s, %lld features) differs from layer %d's (%s, %d)", spec.c_str(), l,
           feature_map_name(kind), (long long)shape[2], first, feature_map_name(cfg.feature_map), cfg.feature_half);
  }
  ENSURE(first >= 0, "%s: no feature maps (model.layers.{i}.self_attn.feature_map_q.mlp.layer): not a LoLCATs "
         "stage-1 (distill) checkpoint", spec.c_str());

  // ---- the LoRA: the same targets on every layer --------------------------------------------------------
  std::vector<std::string> targets;
  for (const char* t : {"q", "k", "v", "o"})
    if (parts[0].count(std::string(t) + "_proj.lora_A.weight")) targets.push_back(t);
  int rank = 0;
  for (int l = 0; l < L; l++)
    for (const char* t : {"q", "k", "v", "o"}) {
      const bool want = std::find(targets.begin(), targets.end(), t) != targets.end();
      for (const char* ab : {"A", "B"})
        ENSURE(parts[size_t(l)].count(std::string(t) + "_proj.lora_" + ab + ".weight") == size_t(want),
               "%s: layer %d %s LoRA %s on %s_proj, layer 0 %s (LoRA on some layers only is not supported)",
               spec.c_str(), l, want ? "lacks" : "has", ab, t, want ? "has it" : "does not");
    }
  if (!targets.empty()) {
    const Source& a = tensors.at("model.layers.0.self_attn." + targets[0] + "_proj.lora_A.weight");
    const std::vector<int64_t>& shape = a.file->info(a.name).shape;
    ENSURE(shape.size() == 2 && shape[0] > 0, "%s: %s has shape %s, not (r, in)", a.file->path().c_str(),
           a.name.c_str(), shape_str(shape).c_str());
    rank = int(shape[0]);
    for (auto& [name, v] : out.base->add_lora(rank, o.lora_alpha, targets, 0)) load(name, v->value);
  }

  // ---- the parameters ---------------------------------------------------------------------------------------
  out.model = std::make_unique<LolcatsModel>(*out.base, cfg);
  const int64_t H = c.n_heads;
  for (auto& [name, t] : out.model->named_tensors()) {
    const Source* src = &tensors.at(name);
    const std::vector<int64_t>& shape = src->file->info(src->name).shape;
    if (ends_with(name, ".mlp.bias") && shape == std::vector<int64_t>{1, H, 1, 1}) {
      // The reference's T2R keeps one bias per head, added to every feature: broadcast it.
      Tensor b = src->file->load(src->name);
      Tensor full = Tensor::empty(t.shape());
      const int64_t F = t.size(1);
      for (int64_t h = 0; h < H; h++)
        for (int64_t f = 0; f < F; f++) full.f32()[h * F + f] = b.f32()[h];
      t.copy_from(full, src->file->path() + ": " + src->name);
      continue;
    }
    load(name, t);
  }

  std::string lora = "no LoRA";
  if (rank > 0) {
    lora = strfmt("LoRA r %d alpha %g on ", rank, double(o.lora_alpha));
    for (size_t i = 0; i < targets.size(); i++) lora += (i ? "," : "") + targets[i];
  }
  std::fprintf(stderr, "[reference checkpoint] %d of %d layers linearized (%s, feature_dim %d, %s attention), %s\n",
               L - int(cfg.softmax_layers.size()), L, feature_map_name(cfg.feature_map), cfg.feature_half,
               variant_name(cfg.variant), lora.c_str());
  return out;
}

}  // namespace lolcats
