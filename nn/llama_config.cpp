#include "nn/llama_config.h"

#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/gguf.h"
#include "tensor/check.h"

namespace lolcats {

using json = nlohmann::json;

void LlamaConfig::validate(const std::string& src) const {
  const char* s = src.c_str();
  ENSURE(vocab > 0 && d_model > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 && ffn > 0 &&
             head_dim > 0,
         "%s: model sizes must be positive (%s)", s, summary().c_str());
  ENSURE(n_heads % n_kv_heads == 0, "%s: %d attention heads are not a multiple of %d kv heads", s,
         n_heads, n_kv_heads);
  ENSURE(head_dim % 2 == 0, "%s: head dimension %d must be even for RoPE", s, head_dim);
  ENSURE(rope.theta > 0, "%s: rope theta must be positive", s);
}

std::string LlamaConfig::summary() const {
  return strfmt("%s: L=%d C=%d H=%d Hkv=%d D=%d FF=%d V=%d theta=%g%s%s", arch.c_str(), n_layers,
                d_model, n_heads, n_kv_heads, head_dim, ffn, vocab, rope.theta,
                rope.llama3_scaling ? " llama3-rope" : "", tied_embeddings ? " tied" : "");
}

// An int that may also be given as a list (eos_token_id: [128001, 128009]): the first entry.
static int first_int(const json& j, int fallback) {
  if (j.is_number_integer()) return int(j.get<int64_t>());
  if (j.is_array() && !j.empty() && j[0].is_number_integer()) return int(j[0].get<int64_t>());
  return fallback;
}

// A required positive-or-zero integer field that fits in an int (a float or a huge number would
// make the conversion undefined).
static int int_field(const json& j, const char* key, const std::string& path) {
  const json& v = j.at(key);
  ENSURE(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX,
         "%s: %s must be a non-negative integer, got %s", path.c_str(), key, v.dump().c_str());
  return int(v.get<int64_t>());
}

LlamaConfig named_config(const std::string& name) {
  LlamaConfig c;
  // vocab, d_model, layers, heads, kv heads, head dim, ffn (from each model's config.json)
  auto shape = [&](int V, int C, int L, int H, int Hkv, int D, int FF) {
    c.vocab = V, c.d_model = C, c.n_layers = L, c.n_heads = H, c.n_kv_heads = Hkv, c.head_dim = D, c.ffn = FF;
  };
  auto llama3_rope = [&](double factor) {
    c.rope.theta = 500000.0, c.rope.llama3_scaling = true, c.rope.factor = factor;
    c.rope.low_freq_factor = 1.0, c.rope.high_freq_factor = 4.0, c.rope.original_max_position = 8192.0;
    c.max_position = 131072;
  };
  if (name == "smollm2-135m") {
    shape(49152, 576, 30, 9, 3, 64, 1536);
    c.rope.theta = 100000.0, c.tied_embeddings = true, c.max_position = 8192;
  } else if (name == "llama3.2-1b") {
    shape(128256, 2048, 16, 32, 8, 64, 8192);
    llama3_rope(32.0);
    c.tied_embeddings = true;
  } else if (name == "llama3-8b") {
    shape(128256, 4096, 32, 32, 8, 128, 14336);
    c.rope.theta = 500000.0, c.max_position = 8192;
  } else if (name == "llama3.1-8b") {
    shape(128256, 4096, 32, 32, 8, 128, 14336);
    llama3_rope(8.0);
  } else if (name == "mistral-7b") {
    shape(32000, 4096, 32, 32, 8, 128, 14336);
    c.arch = "mistral", c.rope.theta = 10000.0, c.max_position = 32768;
  } else if (name == "llama3-70b") {
    shape(128256, 8192, 80, 64, 8, 128, 28672);
    c.rope.theta = 500000.0, c.max_position = 8192;
  } else if (name == "toy") {
    // No published model: a shape small enough for the benches' smoke runs on the SIMT emulator
    // (the GPU bundle's check), with GQA and the head size the CUDA kernels take.
    shape(512, 128, 2, 4, 2, 32, 256);
  } else {
    fail(__FILE__, __LINE__, "unknown model config \"" + name +
                                 "\" (smollm2-135m, llama3.2-1b, llama3-8b, llama3.1-8b, mistral-7b, llama3-70b, toy)");
  }
  c.validate(name);
  return c;
}

int64_t parameter_count(const LlamaConfig& c) {
  const int64_t C = c.d_model, HD = int64_t(c.n_heads) * c.head_dim, KD = int64_t(c.n_kv_heads) * c.head_dim;
  const int64_t per_layer = 2 * C * HD + 2 * C * KD + 3 * C * c.ffn + 2 * C;  // q, o; k, v; MLP; norms
  return int64_t(c.vocab) * C * (c.tied_embeddings ? 1 : 2) + c.n_layers * per_layer + C;
}

LlamaConfig config_from_hf_json(const std::string& path) {
  std::ifstream in(path);
  ENSURE(in.good(), "cannot open %s", path.c_str());
  json j;
  try {
    j = json::parse(in);
    LlamaConfig c;
    c.arch = j.value("model_type", std::string("?"));
    ENSURE(c.arch == "llama" || c.arch == "mistral",
           "%s: model_type \"%s\" is not supported (this project runs llama and mistral)",
           path.c_str(), c.arch.c_str());
    c.vocab = int_field(j, "vocab_size", path);
    c.d_model = int_field(j, "hidden_size", path);
    c.n_layers = int_field(j, "num_hidden_layers", path);
    c.n_heads = int_field(j, "num_attention_heads", path);
    c.n_kv_heads = j.contains("num_key_value_heads") ? int_field(j, "num_key_value_heads", path) : c.n_heads;
    c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null() ? int_field(j, "head_dim", path)
                                                                    : c.n_heads > 0 ? c.d_model / c.n_heads : 0;
    c.ffn = int_field(j, "intermediate_size", path);
    c.norm_eps = j.value("rms_norm_eps", 1e-5f);
    c.tied_embeddings = j.value("tie_word_embeddings", false);
    c.max_position = j.value("max_position_embeddings", 0);
    c.bos_id = first_int(j.value("bos_token_id", json()), -1);
    c.eos_id = first_int(j.value("eos_token_id", json()), -1);
    // RoPE: older configs say rope_theta + rope_scaling; transformers 5 writes rope_parameters.
    json rope = j.contains("rope_parameters") && j["rope_parameters"].is_object() ? j["rope_parameters"]
                : j.contains("rope_scaling") && j["rope_scaling"].is_object() ? j["rope_scaling"]
                                                                              : json::object();
    c.rope.theta = rope.value("rope_theta", j.value("rope_theta", 10000.0));
    std::string type = rope.value("rope_type", rope.value("type", std::string("default")));
    if (type == "llama3") {
      c.rope.llama3_scaling = true;
      c.rope.factor = rope.at("factor").get<double>();
      c.rope.low_freq_factor = rope.at("low_freq_factor").get<double>();
      c.rope.high_freq_factor = rope.at("high_freq_factor").get<double>();
      c.rope.original_max_position = rope.at("original_max_position_embeddings").get<double>();
    } else {
      ENSURE(type == "default", "%s: rope type \"%s\" is not supported (default and llama3 are)",
             path.c_str(), type.c_str());
    }
    c.validate(path);
    return c;
  } catch (const json::exception& e) {
    fail(__FILE__, __LINE__, strfmt("%s: malformed or incomplete config: %s", path.c_str(), e.what()));
  }
}

LlamaConfig config_from_gguf(const GGUFFile& f) {
  LlamaConfig c;
  c.arch = f.get_string("general.architecture");
  ENSURE(c.arch == "llama" || c.arch == "mistral",
         "%s: architecture \"%s\" is not supported (this project runs llama and mistral)",
         f.path().c_str(), c.arch.c_str());
  const std::string a = c.arch + ".";
  c.d_model = int(f.get_int(a + "embedding_length"));
  c.n_layers = int(f.get_int(a + "block_count"));
  c.n_heads = int(f.get_int(a + "attention.head_count"));
  c.n_kv_heads = f.has(a + "attention.head_count_kv") ? int(f.get_int(a + "attention.head_count_kv"))
                                                       : c.n_heads;
  c.head_dim = f.has(a + "rope.dimension_count") ? int(f.get_int(a + "rope.dimension_count"))
                                                  : (c.n_heads > 0 ? c.d_model / c.n_heads : 0);
  c.ffn = int(f.get_int(a + "feed_forward_length"));
  c.norm_eps = float(f.get_float(a + "attention.layer_norm_rms_epsilon"));
  c.rope.theta = f.has(a + "rope.freq_base") ? f.get_float(a + "rope.freq_base") : 10000.0;
  c.max_position = f.has(a + "context_length") ? int(f.get_int(a + "context_length")) : 0;
  c.vocab = f.has(a + "vocab_size") ? int(f.get_int(a + "vocab_size"))
                                    : int(f.get_string_array("tokenizer.ggml.tokens").size());
  c.tied_embeddings = !f.has_tensor("output.weight");
  if (f.has("tokenizer.ggml.bos_token_id")) c.bos_id = int(f.get_int("tokenizer.ggml.bos_token_id"));
  if (f.has("tokenizer.ggml.eos_token_id")) c.eos_id = int(f.get_int("tokenizer.ggml.eos_token_id"));
  // Llama 3.1 GGUFs bake the scaled frequencies into a rope_freqs tensor instead of metadata.
  ENSURE(!f.has_tensor("rope_freqs.weight"),
         "%s: GGUF files with rope_freqs (Llama 3.1 scaling) are not supported yet; use the "
         "Hugging Face folder of the model instead", f.path().c_str());
  c.validate(f.path());
  return c;
}

}  // namespace lolcats
