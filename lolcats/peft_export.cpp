#include "lolcats/peft_export.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "data/safetensors.h"
#include "data/torch_pt.h"

namespace lolcats {

void export_peft(const std::string& dir, const LolcatsModel& model, const std::string& base_model) {
  ENSURE(mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST, "cannot create %s: %s", dir.c_str(), std::strerror(errno));
  save_torch_state_dict(dir + "/lolcats_distill.pt", model.named_tensors(), "model_state_dict");

  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<std::string> targets;
  int rank = 0;
  float scale = 0;
  const std::vector<LlamaLayer>& layers = model.base.layers;
  for (size_t l = 0; l < layers.size(); l++) {
    const LlamaLayer& L = layers[l];
    for (auto [t, lora] : {std::pair{"q", &L.lora_q}, {"k", &L.lora_k}, {"v", &L.lora_v}, {"o", &L.lora_o}}) {
      if (!lora->active()) continue;
      const std::string p = "base_model.model.model.layers." + std::to_string(l) + ".self_attn." + t + "_proj.";
      tensors.push_back({p + "lora_A.weight", lora->A->value.to(Device::cpu, DType::f32)});
      tensors.push_back({p + "lora_B.weight", lora->B->value.to(Device::cpu, DType::f32)});
      if (l == 0) targets.push_back(std::string(t) + "_proj"), rank = int(lora->A->value.size(0)), scale = lora->scale;
    }
  }
  if (tensors.empty()) return;  // stage 1 only: no adapter

  const double alpha = double(scale) * rank;
  nlohmann::ordered_json cfg = {
      {"base_model_name_or_path", base_model},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"lora_alpha", alpha},
      {"lora_dropout", 0.0},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", rank},
      {"revision", nullptr},
      {"target_modules", targets},
      {"task_type", "CAUSAL_LM"}};
  if (alpha == std::round(alpha)) cfg["lora_alpha"] = int64_t(std::llround(alpha));  // 16, as peft writes it
  write_file_atomic(dir + "/adapter_config.json", cfg.dump(2) + "\n");
  save_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace lolcats
