// A linearized model as the PyTorch side consumes it (`./linearize --export-format peft`): a folder
// that peft and the LoLCATs reference implementation load directly.
//
//   DIR/adapter_config.json        peft's LoraConfig: peft_type LORA, task_type CAUSAL_LM, r,
//                                  lora_alpha, lora_dropout 0, bias none, fan_in_fan_out false,
//                                  target_modules (q_proj, k_proj, v_proj, o_proj),
//                                  base_model_name_or_path (the base this run was made from)
//   DIR/adapter_model.safetensors  the LoRA under peft's saved names,
//                                  base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_A.weight (r, in)
//                                  ...lora_B.weight (out, r); f32
//   DIR/lolcats_distill.pt         the feature maps and window factors, as the reference's stage-1
//                                  trainer saves them (torch.save({'model_state_dict': OrderedDict})
//                                  with model.layers.{i}.self_attn.feature_map_{q,k}.mlp.layer and
//                                  window_factors): its loaders, and torch.load, read it
// The adapter files are written only when the model has LoRA (stage 2 ran). In PyTorch:
//   model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), DIR)
// gives the base model with our LoRA (softmax attention: the feature maps are not peft's to load);
// the reference implementation takes lolcats_distill.pt as its attention checkpoint and the adapter
// for its LoRA.
#pragma once
#include <string>

#include "lolcats/model.h"

namespace lolcats {

// Writes the folder `dir` (created if needed; each file atomically).
void export_peft(const std::string& dir, const LolcatsModel& model, const std::string& base_model);

}  // namespace lolcats
