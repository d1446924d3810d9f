"""PyTorch checkpoints written by torch.save itself, for the reader in data/torch_pt.h, and a tiny
model's LoLCATs checkpoints in the reference implementation's own form (LOLCATS.md section 8).

Writes, next to the fixture, into torch_pt/:
  basic.pt        {'model_state_dict': OrderedDict(...), 'step': 7, 'eval/loss': 1.25}: f32, bf16
                  and f16 tensors, a 4-D one, a view with a storage offset (a row of a bigger
                  tensor: torch.save keeps the whole storage), two views sharing one storage, an
                  nn.Parameter, and a transposed (non-contiguous) tensor the reader must refuse
  plain.pt        an nn.Module's state_dict saved bare, with pickle protocol 4 (memo, frames,
                  STACK_GLOBAL, the state dict's _metadata set by BUILD)
  legacy.pt       the pre-1.6 format (_use_new_zipfile_serialization=False): to be refused
  deflated.pt     basic.pt re-zipped with deflate compression: to be refused
  pt_tiny_llama/  a tiny LlamaForCausalLM (save_pretrained: 3 layers, GQA 4/2, D = 16)
  tiny_distill.pt its stage-1 checkpoint as the reference's trainer saves it: {'model_state_dict':
                  OrderedDict of the trainable nn.Parameters, 'step', 'eval/loss'} with
                  model.layers.{i}.self_attn.feature_map_{q,k}.mlp.layer (H, D, Fh = 8) and
                  window_factors (1, H, 1, 1), bf16 as published; layer 1 has none (kept softmax)
  tiny_ft.pt      its stage-2 checkpoint: the LoRA (r 8, alpha 16, q/k/v/o) made by peft's
                  get_peft_model on the tiny model, saved the same way under peft's own parameter
                  names (base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.default.weight)
The fixture (ref_torch_pt.safetensors) holds every tensor's expected values ("basic.<name>",
"plain.<name>", "distill.<name>") and the projections merged by peft's merge_and_unload in float64
("merged.model.layers.{i}.self_attn.{q,k,v,o}_proj.weight").
"""
import collections
import os
import zipfile

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from common import Fixture, output_path

out = output_path()
side = os.path.join(os.path.dirname(out), "torch_pt")
os.makedirs(side, exist_ok=True)
fx = Fixture(seed=1606)
torch.manual_seed(1606)

# ---- basic.pt ------------------------------------------------------------------------------------------
big = torch.randn(4, 5, generator=fx.gen)
pair = torch.randn(6, generator=fx.gen)
sd = collections.OrderedDict()
sd["f32"] = torch.randn(2, 3, generator=fx.gen)
sd["bf16"] = torch.randn(4, 5, generator=fx.gen).to(torch.bfloat16)
sd["f16"] = torch.randn(7, generator=fx.gen).to(torch.float16)
sd["four_d"] = torch.randn(2, 3, 4, 5, generator=fx.gen)
sd["row_of_big"] = big[2]            # storage offset 10 into big's 20 elements
sd["pair_head"] = pair[:3]           # two tensors on one storage
sd["pair_tail"] = pair[3:]
sd["param"] = torch.nn.Parameter(torch.randn(3, 2, generator=fx.gen))
sd["transposed"] = torch.randn(3, 4, generator=fx.gen).t()
torch.save({"model_state_dict": sd, "step": 7, "eval/loss": 1.25}, os.path.join(side, "basic.pt"))
for name, t in sd.items():
    if name != "transposed":
        fx.put("basic." + name, t.detach().double())

# ---- plain.pt: a module's state dict, protocol 4 ---------------------------------------------------------
lin = torch.nn.Linear(3, 2)
torch.save(lin.state_dict(), os.path.join(side, "plain.pt"), pickle_protocol=4)
for name, t in lin.state_dict().items():
    fx.put("plain." + name, t.double())

# ---- files to refuse -------------------------------------------------------------------------------------
torch.save({"x": torch.zeros(2)}, os.path.join(side, "legacy.pt"), _use_new_zipfile_serialization=False)
with zipfile.ZipFile(os.path.join(side, "basic.pt")) as src, \
        zipfile.ZipFile(os.path.join(side, "deflated.pt"), "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        dst.writestr(item.filename, src.read(item.filename))

# ---- the tiny model's reference checkpoints ------------------------------------------------------------
cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, tie_word_embeddings=False, rope_theta=10000.0,
                  bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(cfg).float()
with torch.no_grad():  # non-trivial norms (they initialise to 1)
    for n, p in model.named_parameters():
        if "norm" in n:
            p.add_(0.1 * torch.randn_like(p))
model.save_pretrained(os.path.join(os.path.dirname(out), "pt_tiny_llama"), safe_serialization=True)

H, D, Fh = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads, 8
distill = collections.OrderedDict()
for i in (0, 2):  # layer 1 stays softmax attention
    p = f"model.layers.{i}.self_attn."
    # nn.Parameters on the CPU: p.cpu() is the Parameter itself, so they pickle as _rebuild_parameter
    distill[p + "feature_map_q.mlp.layer"] = torch.nn.Parameter(
        (torch.randn(H, D, Fh, generator=fx.gen) * 0.5).to(torch.bfloat16))
    distill[p + "feature_map_k.mlp.layer"] = torch.nn.Parameter(
        (torch.randn(H, D, Fh, generator=fx.gen) * 0.5).to(torch.bfloat16))
    distill[p + "window_factors"] = torch.nn.Parameter(
        (torch.randn(1, H, 1, 1, generator=fx.gen) - 2.2).to(torch.bfloat16))
torch.save({"model_state_dict": collections.OrderedDict((n, t.cpu()) for n, t in distill.items()),
            "step": 100, "eval/loss": 0.5}, os.path.join(side, "tiny_distill.pt"))
for name, t in distill.items():
    fx.put("distill." + name, t.detach().double())

peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
with torch.no_grad():  # lora_B starts at zero: make both factors random so the merge shows
    for n, p in peft_model.named_parameters():
        if "lora_" in n:
            p.copy_(torch.randn(p.shape, generator=fx.gen) * 0.1)
trainable = collections.OrderedDict((n, p.cpu()) for n, p in peft_model.named_parameters() if p.requires_grad)
assert all(".lora_A.default.weight" in n or ".lora_B.default.weight" in n for n in trainable), list(trainable)
torch.save({"model_state_dict": trainable, "step": 200, "eval/loss": 0.4}, os.path.join(side, "tiny_ft.pt"))

merged = peft_model.double().merge_and_unload()
for i in range(cfg.num_hidden_layers):
    for proj in ("q", "k", "v", "o"):
        name = f"model.layers.{i}.self_attn.{proj}_proj.weight"
        fx.put("merged." + name, merged.state_dict()[name])

fx.save(out)
