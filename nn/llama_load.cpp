// Loading Llama weights from a Hugging Face folder (config.json + safetensors, single or sharded)
// or from a GGUF file. Every tensor is checked against the shape the config implies, by name, so a
// mismatched or truncated checkpoint fails with one line that says which tensor and why.
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "data/gguf.h"
#include "data/safetensors.h"
#include "nn/llama.h"

namespace lolcats {

namespace {

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// GGUF tensor names of the same parameters, in named_parameters() order.
std::string gguf_name(const std::string& hf) {
  static const std::map<std::string, std::string> layer_names = {
      {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  size_t dot = hf.find('.', prefix.size());
  return "blk." + hf.substr(prefix.size(), dot - prefix.size()) + "." + layer_names.at(hf.substr(dot + 1));
}

std::unique_ptr<Llama> load_gguf(const std::string& path, Device device, DType dtype) {
  GGUFFile f(path);
  auto model = std::make_unique<Llama>(config_from_gguf(f), device, dtype);
  const LlamaConfig& c = model->cfg;
  for (auto& [hf, var] : model->named_parameters()) {
    std::string name = gguf_name(hf);
    ENSURE(f.has_tensor(name), "%s: missing tensor %s", path.c_str(), name.c_str());
    Tensor w = f.load_f32(name);  // dequantised on the host, one tensor at a time
    // llama.cpp's converter permuted q/k rows to the interleaved RoPE layout: undo it.
    if (ends_with(hf, "q_proj.weight")) permute_qk_rows(w, c.n_heads, c.head_dim, true);
    if (ends_with(hf, "k_proj.weight")) permute_qk_rows(w, c.n_kv_heads, c.head_dim, true);
    if (w.shape() == var->value.shape()) w = w.to(Device::cpu, dtype);  // (else copy_from says why)
    var->value.copy_from(w, path + ": tensor " + name);
  }
  return model;
}

std::unique_ptr<Llama> load_hf_folder(const std::string& dir, Device device, DType dtype) {
  std::string cfg_path = dir + "/config.json";
  ENSURE(is_file(cfg_path), "%s has no config.json: expected a Hugging Face model folder or a .gguf file",
         dir.c_str());
  auto model = std::make_unique<Llama>(config_from_hf_json(cfg_path), device, dtype);
  // tensor name -> shard file
  std::map<std::string, std::string> where;
  std::string index = dir + "/model.safetensors.index.json";
  if (is_file(index)) {
    std::ifstream in(index);
    try {
      auto j = nlohmann::json::parse(in);
      for (auto& [name, file] : j.at("weight_map").items()) where[name] = dir + "/" + file.get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      fail(__FILE__, __LINE__, strfmt("%s: malformed index: %s", index.c_str(), e.what()));
    }
  } else {
    std::string single = dir + "/model.safetensors";
    ENSURE(is_file(single), "%s has neither model.safetensors nor model.safetensors.index.json",
           dir.c_str());
    SafeTensorsFile f(single);
    for (const std::string& n : f.names()) where[n] = single;
  }
  std::map<std::string, std::unique_ptr<SafeTensorsFile>> open_files;
  for (auto& [name, var] : model->named_parameters()) {
    auto it = where.find(name);
    ENSURE(it != where.end(), "%s: the checkpoint has no tensor %s", dir.c_str(), name.c_str());
    auto& file = open_files[it->second];
    if (!file) file = std::make_unique<SafeTensorsFile>(it->second);
    file->load_into(name, var->value);
  }
  return model;
}

// A model path that is not a folder must be a .gguf file.
void check_gguf_path(const std::string& path) {
  ENSURE(is_file(path), "model not found: %s (give a Hugging Face folder or a .gguf file)",
         path.c_str());
  ENSURE(ends_with(path, ".gguf"), "%s: unknown model format (give a Hugging Face folder or a .gguf file)",
         path.c_str());
}

}  // namespace

std::unique_ptr<Llama> Llama::load(const std::string& path, Device device, DType dtype) {
  if (is_dir(path)) return load_hf_folder(path, device, dtype);
  check_gguf_path(path);
  return load_gguf(path, device, dtype);
}

LlamaConfig config_from_model(const std::string& path) {
  if (is_dir(path)) {
    std::string cfg_path = path + "/config.json";
    ENSURE(is_file(cfg_path), "%s has no config.json: expected a Hugging Face model folder or a .gguf file",
           path.c_str());
    return config_from_hf_json(cfg_path);
  }
  check_gguf_path(path);
  return config_from_gguf(GGUFFile(path));  // the header only: tensors stay unread in the mapping
}

}  // namespace lolcats
