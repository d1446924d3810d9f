"""Reference tensors for the Llama model (nn/llama.h), from Hugging Face transformers.

1. Tiny random LlamaForCausalLM models written with save_pretrained (the real file format):
   build/fixtures/tiny_llama/        2 layers, GQA 4/2, Llama 3.1 rope scaling, sharded safetensors
   build/fixtures/tiny_llama_tied/   same sizes, tied embeddings, one safetensors file, default rope
   For each: input ids, targets, logits, cross-entropy loss and the gradient of every parameter,
   computed in float64 from the saved float32 weights.
2. SmolLM2-135M-Instruct from the GGUF file, loaded by transformers (gguf_file=...): logits for three
   prompts and 32-token greedy continuations, so our GGUF loader (dequantisation + q/k un-permute)
   and forward pass are checked against an independent implementation on the real model.
"""
import os
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from common import Fixture, output_path

out = output_path()
base = os.path.dirname(out)
fx = Fixture(seed=2024)
torch.manual_seed(0)

# ---- 1. tiny models -----------------------------------------------------------------------------
tiny = {
    "tiny_llama": LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                              rms_norm_eps=1e-5, tie_word_embeddings=False,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                              rope_theta=10000.0, bos_token_id=1, eos_token_id=2),
    "tiny_llama_tied": LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=100000.0,
                                   bos_token_id=1, eos_token_id=2),
}
B, T = 2, 40
for name, cfg in tiny.items():
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # make the norms non-trivial (they initialise to 1)
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    shard = "60KB" if name == "tiny_llama" else "100MB"
    model.save_pretrained(os.path.join(base, name), max_shard_size=shard, safe_serialization=True)
    model = model.double()
    ids = torch.randint(0, cfg.vocab_size, (B, T), generator=fx.gen)
    targets = torch.randint(0, cfg.vocab_size, (B * T,), generator=fx.gen)
    targets[::7] = -100
    logits = model(ids).logits.reshape(B * T, -1)
    loss = F.cross_entropy(logits, targets, ignore_index=-100)
    loss.backward()
    fx.put(name + ".ids", ids)
    fx.put(name + ".targets", targets)
    fx.put(name + ".logits", logits)
    fx.put(name + ".loss", loss.reshape(1))
    for n, p in model.named_parameters():
        fx.put(name + ".grad." + n, p.grad)

# ---- 2. SmolLM2-135M-Instruct from GGUF ---------------------------------------------------------
gguf_dir, gguf_file = "models", "SmolLM2-135M-Instruct.Q4_1.gguf"
if not os.path.exists(os.path.join(gguf_dir, gguf_file)):
    sys.exit(f"{gguf_dir}/{gguf_file} is missing: run `make model`")
tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
smol = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32).eval()
prompts = ["The capital of France is", "def fibonacci(n):\n    ",
           tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)]
with torch.no_grad():
    for i, text in enumerate(prompts):
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        fx.put(f"smol.{i}.ids", ids[0])
        fx.put(f"smol.{i}.logits", smol(ids).logits[0].float())
        gen = smol.generate(ids, max_new_tokens=32, do_sample=False, pad_token_id=tok.eos_token_id)
        fx.put(f"smol.{i}.greedy", gen[0, ids.shape[1]:])
        print(f"prompt {i}: {tok.decode(gen[0, ids.shape[1]:])!r}")

fx.save(out)
