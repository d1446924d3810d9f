"""Reference passkey prompts and replies (nn/eval/passkey.h) from Hugging Face transformers on
SmolLM2-135M-Instruct (the GGUF file in models/). The prompts are built here from the rule written in
nn/eval/passkey.h, never from our C++ output:
  lines joined by "\n": the instruction, filler sentences 0..a-1 (joined by spaces; the line left
  out when a = 0), the needle, filler sentences a..N-1 (left out when a = N), the question;
  sentence i = FILLER[i % 5]; N = the largest count with len(tokens) <= length (found here by a
  plain upward scan, not by bisection as the C++ does); a = floor(depth * N / 100 + 1/2).
No BOS (SmolLM2's tokenizer adds none). For each case: length, depth, key, N, a, the token ids; for
the generation cases also transformers' greedy reply (10 new tokens at most, ending at EOS).
"""
import os
import random
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import Fixture, output_path

INSTRUCTION = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
               "I will quiz you about the important information there.")
FILLER = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."]
QUESTION = "What is the pass key? The pass key is"
NEW_TOKENS = 10

out = output_path()
gguf_dir, gguf_file = "models", "SmolLM2-135M-Instruct.Q4_1.gguf"
if not os.path.exists(os.path.join(gguf_dir, gguf_file)):
    sys.exit(f"{gguf_dir}/{gguf_file} is missing: run `make model`")
tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
fx = Fixture(seed=11)


def text(n, a, key):
    lines = [INSTRUCTION]
    if a > 0:
        lines.append(" ".join(FILLER[i % 5] for i in range(a)))
    lines.append(f"The pass key is {key}. Remember it. {key} is the pass key.")
    if a < n:
        lines.append(" ".join(FILLER[i % 5] for i in range(a, n)))
    lines.append(QUESTION)
    return "\n".join(lines)


def before(n, depth):
    return (2 * depth * n + 100) // 200


def encode(n, depth, key):
    return tok.encode(text(n, before(n, depth), key), add_special_tokens=False)


def fit(length, depth, key):
    # Upward from an estimate a few sentences below the answer (from the tokens of 50 sentences).
    bare = len(encode(0, depth, key))
    per = (len(encode(50, depth, key)) - bare) / 50
    n = max(0, int((length - bare) / per) - 4)
    while n > 0 and len(encode(n, depth, key)) > length:
        n -= 4
    while len(encode(n + 1, depth, key)) <= length:
        n += 1
    return n


rng = random.Random(7)
cases = [(L, d, False) for L in (512, 1024, 4096) for d in (0, 10, 50, 90, 100)]
cases += [(256, 50, True)] * 5 + [(256, 0, True), (256, 100, True), (512, 25, True)]
smol = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32).eval()
for i, (length, depth, generate) in enumerate(cases):
    key = rng.randint(10000, 99999)
    n = fit(length, depth, key)
    ids = encode(n, depth, key)
    for name, v in (("length", length), ("depth", depth), ("key", key), ("filler", n), ("before", before(n, depth))):
        fx.put(f"case.{i}.{name}", torch.tensor([v]))
    fx.put(f"case.{i}.ids", torch.tensor(ids))
    if generate:
        with torch.no_grad():
            gen = smol.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        reply = gen[0, len(ids):]
        fx.put(f"case.{i}.greedy", reply)
        print(f"case {i}: {length} tokens, depth {depth}%, key {key}: {tok.decode(reply)!r}")
fx.put("cases", torch.tensor([len(cases)]))
fx.save(out)
