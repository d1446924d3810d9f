#include "lolcats/export.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "data/safetensors.h"

namespace lolcats {

namespace {

// The projections of one layer that LoRA can adapt, with their Hugging Face names.
struct Site {
  const char* target;  // "q", "k", "v", "o"
  Var weight;
  const Lora* lora;
};
std::vector<Site> sites(const LlamaLayer& L) {
  return {{"q", L.wq, &L.lora_q}, {"k", L.wk, &L.lora_k}, {"v", L.wv, &L.lora_v}, {"o", L.wo, &L.lora_o}};
}
std::string proj_prefix(int layer, const char* target) {
  return "model.layers." + std::to_string(layer) + ".self_attn." + target + "_proj.";
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ",") + s;
  return out;
}
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

const std::string& meta(const SafeTensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  ENSURE(it != f.metadata().end(), "%s: metadata has no \"%s\" (not written by ./linearize?)",
         f.path().c_str(), key.c_str());
  return it->second;
}

int parse_count(const SafeTensorsFile& f, const std::string& key, const std::string& s) {
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  ENSURE(!s.empty() && *end == 0 && v >= 0 && v < (1 << 20), "%s: metadata %s = \"%s\" is not a count",
         f.path().c_str(), key.c_str(), s.c_str());
  return int(v);
}
int meta_int(const SafeTensorsFile& f, const std::string& key) { return parse_count(f, key, meta(f, key)); }

namespace fs = std::filesystem;

// The base model as the export records it: its absolute path, and its path from the export's own
// folder, so that the export finds its base from any working folder and after the run folder and
// the model moved together.
std::map<std::string, std::string> base_paths(const std::string& base_model, const std::string& export_path) {
  const fs::path base = fs::absolute(base_model).lexically_normal();
  const fs::path folder = fs::absolute(export_path).parent_path();
  return {{"base_model", base.string()}, {"base_model_from_export", base.lexically_relative(folder).string()}};
}

// Where the base of the export at `path` is: the first of the recorded absolute path, the path
// from the export's folder, and (exports from before both were recorded) the recorded path from
// the working folder, that exists. None: one error naming every place tried.
std::string find_base(const SafeTensorsFile& f, const std::string& path) {
  std::vector<std::string> tried;
  auto exists = [&](const fs::path& p) {
    tried.push_back(p.string());
    std::error_code ec;
    return fs::exists(p, ec);
  };
  const std::string& recorded = meta(f, "base_model");
  if (fs::path(recorded).is_absolute() && exists(recorded)) return recorded;
  auto rel = f.metadata().find("base_model_from_export");
  if (rel != f.metadata().end()) {
    const fs::path p = (fs::absolute(path).parent_path() / rel->second).lexically_normal();
    if (exists(p)) return p.string();
  }
  if (!fs::path(recorded).is_absolute() && exists(recorded)) return recorded;
  std::string list;
  for (const std::string& t : tried) list += (list.empty() ? "" : ", ") + t;
  fail(__FILE__, __LINE__,
       strfmt("%s: its base model was not found (tried %s); pass it with --model", path.c_str(), list.c_str()));
}

// A fingerprint of the base weights: FNV-1a over every RMSNorm weight (small, and different between
// fine-tunes of one architecture), rounded to bf16 so that a model trained with bf16 weights on the
// GPU and the same model loaded in f32 on the CPU agree. (Exports written before used the f32
// bytes: `legacy` computes that, and loading accepts either.)
std::string norms_fingerprint(const Llama& m, bool legacy = false) {
  uint64_t h = 1469598103934665603ull;
  auto add = [&](const Var& v) {
    Tensor host = v->value.to(Device::cpu, legacy ? DType::f32 : DType::bf16);
    const unsigned char* p = static_cast<const unsigned char*>(host.data());
    for (size_t i = 0; i < host.nbytes(); i++) h = (h ^ p[i]) * 1099511628211ull;
  };
  for (const LlamaLayer& L : m.layers) add(L.attn_norm), add(L.mlp_norm);
  add(m.norm);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

}  // namespace

LoraExport parse_lora_export(const std::string& name) {
  if (name == "separate") return LoraExport::separate;
  if (name == "merged") return LoraExport::merged;
  throw Error("unknown LoRA export \"" + name + "\" (separate or merged)");
}

void export_linearized(const std::string& path, const LolcatsModel& model, LoraExport lora,
                       const std::string& base_model) {
  const Llama& base = model.base;
  std::vector<std::string> targets;
  int rank = 0;
  float scale = 0;
  for (const Site& s : sites(base.layers[0]))
    if (s.lora->active()) targets.push_back(s.target), rank = int(s.lora->A->value.size(0)), scale = s.lora->scale;

  std::vector<std::pair<std::string, Tensor>> tensors = model.named_tensors();
  const bool merged = lora == LoraExport::merged && !targets.empty();
  if (merged) {
    std::map<std::string, Tensor> merged_weights;  // W + scale B A, by parameter name
    for (size_t l = 0; l < base.layers.size(); l++)
      for (const Site& s : sites(base.layers[l])) {
        if (!s.lora->active()) continue;
        Var w = leaf(s.weight->value.clone(), false);  // the trained model itself stays unmerged
        merge_lora(w, *s.lora);
        merged_weights[proj_prefix(int(l), s.target) + "weight"] = w->value;
      }
    for (auto& [name, v] : base.named_parameters()) {
      auto it = merged_weights.find(name);
      tensors.push_back({name, it != merged_weights.end() ? it->second : v->value});
    }
  } else {
    for (size_t l = 0; l < base.layers.size(); l++)
      for (const Site& s : sites(base.layers[l])) {
        if (!s.lora->active()) continue;
        tensors.push_back({proj_prefix(int(l), s.target) + "lora_A.weight", s.lora->A->value});
        tensors.push_back({proj_prefix(int(l), s.target) + "lora_B.weight", s.lora->B->value});
      }
  }
  std::vector<std::string> softmax;
  for (size_t l = 0; l < model.layers.size(); l++)
    if (!model.layers[l].converted) softmax.push_back(std::to_string(l));
  std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"lolcats_variant", variant_name(model.cfg.variant)},
      {"feature_map", feature_map_name(model.cfg.feature_map)},
      {"feature_half", std::to_string(model.Fh)},
      {"softmax_layers", join(softmax)},
      {"base_config", base.cfg.summary()},
      {"base_norms_fnv1a", norms_fingerprint(base)},
      {"lora", targets.empty() ? "none" : merged ? "merged" : "separate"},
      {"lora_rank", std::to_string(rank)},
      {"lora_alpha", std::to_string(scale * float(rank))},
      {"lora_targets", join(targets)}};
  metadata.merge(base_paths(base_model, path));
  save_safetensors(path, tensors, metadata);
}

bool is_linearized_export(const std::string& path) {
  if (path.size() < 12 || path.compare(path.size() - 12, 12, ".safetensors") != 0) return false;
  SafeTensorsFile f(path);
  return f.metadata().count("lolcats_variant") > 0 && f.metadata().count("base_model") > 0;
}

LinearizedModel load_linearized(const std::string& path, const std::string& base_override) {
  SafeTensorsFile f(path);
  LinearizedModel out;
  out.base_model = base_override.empty() ? find_base(f, path) : base_override;
  out.base = Llama::load(out.base_model);
  ENSURE(out.base->cfg.summary() == meta(f, "base_config"),
         "%s was made from a different base model (%s) than %s (%s)", path.c_str(),
         meta(f, "base_config").c_str(), out.base_model.c_str(), out.base->cfg.summary().c_str());

  const std::string fingerprint = meta(f, "base_norms_fnv1a");
  ENSURE(norms_fingerprint(*out.base) == fingerprint || norms_fingerprint(*out.base, true) == fingerprint,
         "%s was made from a model with other weights than %s (same architecture, different "
         "normalisation weights: another fine-tune?)", path.c_str(), out.base_model.c_str());

  LolcatsConfig cfg;
  cfg.variant = parse_variant(meta(f, "lolcats_variant"));
  cfg.feature_map = parse_feature_map(meta(f, "feature_map"));
  cfg.feature_half = meta_int(f, "feature_half");
  for (const std::string& l : split(meta(f, "softmax_layers"))) cfg.softmax_layers.push_back(parse_count(f, "softmax_layers", l));

  const std::string& lora = meta(f, "lora");
  if (lora == "merged") {
    for (auto& [name, v] : out.base->named_parameters()) f.load_into(name, v->value);
  } else if (lora == "separate") {
    float alpha = std::strtof(meta(f, "lora_alpha").c_str(), nullptr);
    auto params = out.base->add_lora(meta_int(f, "lora_rank"), alpha, split(meta(f, "lora_targets")), 0);
    for (auto& [name, v] : params) f.load_into(name, v->value);
  } else {
    ENSURE(lora == "none", "%s: unknown LoRA form \"%s\"", path.c_str(), lora.c_str());
  }
  out.model = std::make_unique<LolcatsModel>(*out.base, cfg);
  out.model->load(path);
  return out;
}

LinearizedModel load_for_inference(const std::string& linearized, const std::string& model_path,
                                   bool base_given, const ReferenceOptions& reference) {
  ENSURE(reference.mask == AttentionMask::paper || !linearized.empty(),
         "--attention-mask reference: only a linearized model has terrace blocks (give --linearized)");
  if (is_reference_checkpoint(linearized)) {
    ENSURE(base_given, "--linearized %s: the reference implementation's checkpoints do not record their "
           "base model: name it with --model (a Hugging Face folder or .gguf file)", linearized.c_str());
    LinearizedModel m = load_reference_checkpoints(linearized, model_path, reference);
    m.model->cfg.mask = reference.mask;
    return m;
  }
  if (!linearized.empty()) {
    LinearizedModel m = load_linearized(linearized, base_given ? model_path : "");
    m.model->cfg.mask = reference.mask;
    return m;
  }
  LinearizedModel out;
  out.base = Llama::load(model_path);
  out.base_model = model_path;
  return out;
}

void place_weights(LinearizedModel& m, Device device, DType dtype) {
  if (device == m.base->device() && dtype == m.base->dtype()) return;
  m.base->merge_loras();
  m.base->to(device, dtype);
  if (m.model) m.model->to(device);
}

std::unique_ptr<Decoder> make_decoder(const LinearizedModel& m, DecodeMode mode, SparseCacheConfig cache) {
  ENSURE(m.model || cache.pairs == 0, "--sparse-cache %d: a softmax model keeps every key already (its KV cache); "
         "give a linearized model (--linearized)", cache.pairs);
  return m.model ? make_decoder(*m.model, mode, cache) : make_decoder(*m.base);
}

}  // namespace lolcats
