"""What peft and torch make of a folder written by our `./linearize --export-format peft`
(lolcats/peft_export.h). Run by tests/test_torch_pt.cpp ([peft]) on an adapter it has just written:

  check_peft.py ADAPTER_DIR BASE_MODEL_DIR OUT.safetensors FT.pt

Loads the base with transformers and the adapter with peft.PeftModel.from_pretrained, as a PyTorch
user would; fails (exit 1, one line) when a key of the file is unexpected or a LoRA weight of the
model is left missing. Writes into OUT, for the C++ test to compare with its own merge:
  merged.model.layers.{i}.self_attn.{q,k,v,o}_proj.weight   peft's merge_and_unload, in float64
  distill.<name>   every tensor of ADAPTER_DIR/lolcats_distill.pt's model_state_dict, read by
                   torch.load(weights_only=True)
and as metadata peft's view of the config (r, lora_alpha, target_modules, task_type) and the counts.
Also writes FT.pt: the LoRA peft loaded, saved as the reference implementation's stage-2 trainer
saves its trainable parameters (torch.save({'model_state_dict': OrderedDict}) under peft's live
names, ...q_proj.lora_A.default.weight), so the test can read the round trip back with --linearized.
"""
import collections
import sys

import torch
from peft import PeftModel
from peft.utils import load_peft_weights, set_peft_model_state_dict
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

if len(sys.argv) != 5:
    sys.exit(f"usage: {sys.argv[0]} ADAPTER_DIR BASE_MODEL_DIR OUT.safetensors FT.pt")
adapter, base, out, ft = sys.argv[1:]

model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
peft_model = PeftModel.from_pretrained(model, adapter)
cfg = peft_model.peft_config["default"]

# Load the file's weights again to see the keys: none unexpected, no LoRA weight missing.
weights = load_peft_weights(adapter)
result = set_peft_model_state_dict(peft_model, weights)
unexpected = list(result.unexpected_keys)
missing = [k for k in result.missing_keys if "lora_" in k]
if unexpected or missing:
    sys.exit(f"peft: unexpected keys {unexpected[:4]}, missing LoRA keys {missing[:4]}")
lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
if len(lora) != len(weights):
    sys.exit(f"peft: the model has {len(lora)} LoRA tensors, the file {len(weights)}")
for name, w in weights.items():  # what was loaded is what the file holds
    live = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
    if not torch.equal(lora[live].detach(), w.to(lora[live].dtype)):
        sys.exit(f"peft: {live} differs from the file's {name}")

torch.save({"model_state_dict": collections.OrderedDict((n, p.detach()) for n, p in lora.items()), "step": 0}, ft)

tensors = {}
merged = peft_model.double().merge_and_unload()
for name, w in merged.state_dict().items():
    if any(f"self_attn.{t}_proj.weight" in name for t in "qkvo"):
        tensors["merged." + name] = w.detach().double().contiguous()

ckpt = torch.load(f"{adapter}/lolcats_distill.pt", weights_only=True)
distill = ckpt["model_state_dict"]
for name, t in distill.items():
    tensors["distill." + name] = t.double().contiguous()

meta = {"r": str(cfg.r), "lora_alpha": str(cfg.lora_alpha), "task_type": str(cfg.task_type),
        "target_modules": ",".join(sorted(cfg.target_modules)), "lora_tensors": str(len(weights)),
        "distill_tensors": str(len(distill))}
save_file(tensors, out, metadata=meta)
print(f"peft loaded {adapter}: {len(weights)} LoRA tensors, r {cfg.r}, alpha {cfg.lora_alpha}; "
      f"torch.load read {len(distill)} feature-map tensors")
