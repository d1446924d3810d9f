"""Reference Alpaca data for data/alpaca.cpp: an independent Python transcription of LOLCATS.md
section 5 (template, BOS/EOS, labels, packing, dropping label-less chunks), tokenised by Hugging
Face on the real data file (../shared/data/alpaca_original_52k.jsonl.zst).

Packing, as data/alpaca.h defines it: the examples of a split, in order, form one stream of
(id, label) pairs s; chunk k has inputs x[t] = id(s[k*T + t]) and targets y[t] = label(s[k*T + t + 1]),
t = 0..T-1 (next-token prediction); the tail that cannot fill a chunk is dropped, and so is a chunk
whose targets are all -100.

Writes OUTPUT.safetensors (I32 tensors):
  n_records, n_with_input, n_empty_output   counts over the whole file (Python's json reader)
  bos_id, eos_id                            of Hugging Face's SmolLM2 tokenizer
  small.{val,train}.{inputs,targets}        (count, 128): the first 300 records, rows 0..199 are
                                            validation; training chunks unshuffled
  full.{val,train}.{x_hash,y_hash}          (count,): the whole file at T = 1024, one hash per chunk
                                            of its inputs and of its targets (see chunk_hashes)
  full.{val,train}.label_tokens             (1,): targets that are not -100
"""
import json
import os
import subprocess

import numpy as np
import torch
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

from common import Fixture, output_path

out_path = output_path()
repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = os.path.join(repo, "..", "shared", "data", "alpaca_original_52k.jsonl.zst")
IGNORE = -100
VAL_ROWS = 200

# SmolLM2's tokenizer as ref_tokenizer.py builds it: transformers' conversion of the GGUF file,
# with SmolLM2's own pre-tokenizer (digits split one by one) put back.
tok = AutoTokenizer.from_pretrained(os.path.join(repo, "models"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
BOS, EOS = tok.bos_token_id, tok.eos_token_id
assert EOS is not None

# The zstandard module may be missing from the venv; the zstd command-line tool is installed.
text = subprocess.run(["zstd", "-dc", DATA], check=True, capture_output=True).stdout.decode("utf-8")
records = [json.loads(line) for line in text.split("\n") if line.strip()]
assert len(records) == 52002, len(records)

WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
              "context. Write a response that appropriately completes the request.\n\n"
              "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
            "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def prompt(r):
    return (WITH_INPUT if r["input"] != "" else NO_INPUT).format(instruction=r["instruction"], input=r["input"])


def tokenize(recs):
    """(ids, labels) per record: BOS + prompt tokens (labels -100), output tokens + EOS (labels = ids)."""
    back = tok.backend_tokenizer
    prompts = back.encode_batch([prompt(r) for r in recs], add_special_tokens=False)
    outputs = back.encode_batch([r["output"] for r in recs], add_special_tokens=False)
    out = []
    for p, o in zip(prompts, outputs):
        head = ([BOS] if BOS is not None else []) + p.ids
        tail = o.ids + [EOS]
        out.append((head + tail, [IGNORE] * len(head) + tail))
    return out


def pack(examples, T):
    ids = [i for e in examples for i in e[0]]
    labels = [l for e in examples for l in e[1]]
    xs, ys = [], []
    for start in range(0, len(ids) - T, T):  # start + T <= len - 1: the chunk's T+1 entries exist
        y = labels[start + 1:start + T + 1]
        if all(v == IGNORE for v in y):
            continue
        xs.append(ids[start:start + T])
        ys.append(y)
    return (torch.tensor(xs, dtype=torch.int32).reshape(-1, T), torch.tensor(ys, dtype=torch.int32).reshape(-1, T))


P = 2147483647  # 2^31 - 1


def chunk_hashes(m):
    """One value per row: sum_t (v[t] + 1000) * 31^(T-1-t) mod P, a position-sensitive hash (a
    polynomial hash evaluated as a weighted sum; every product and the row sum fit in int64)."""
    T = m.shape[1]
    w = np.array([pow(31, T - 1 - t, P) for t in range(T)], dtype=np.int64)
    return torch.from_numpy(((m.numpy().astype(np.int64) + 1000) * w).sum(axis=1) % P).to(torch.int32)


fx = Fixture(seed=0)
fx.put("n_records", torch.tensor([len(records)]))
fx.put("n_with_input", torch.tensor([sum(r["input"] != "" for r in records)]))
fx.put("n_empty_output", torch.tensor([sum(r["output"] == "" for r in records)]))
fx.put("bos_id", torch.tensor([-1 if BOS is None else BOS]))
fx.put("eos_id", torch.tensor([EOS]))

small = tokenize(records[:300])
for split, exs in (("val", small[:VAL_ROWS]), ("train", small[VAL_ROWS:])):
    x, y = pack(exs, 128)
    fx.put(f"small.{split}.inputs", x)
    fx.put(f"small.{split}.targets", y)
    print(f"small {split}: {x.shape[0]} chunks of 128")

full = tokenize(records)
for split, exs in (("val", full[:VAL_ROWS]), ("train", full[VAL_ROWS:])):
    x, y = pack(exs, 1024)
    fx.put(f"full.{split}.x_hash", chunk_hashes(x))
    fx.put(f"full.{split}.y_hash", chunk_hashes(y))
    fx.put(f"full.{split}.label_tokens", torch.tensor([int((y != IGNORE).sum())]))
    print(f"full {split}: {x.shape[0]} chunks of 1024, {int((y != IGNORE).sum())} label tokens")
fx.save(out_path)
