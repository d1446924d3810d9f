"""A complete tiny model folder and data for the end-to-end tests of the apps (tests/test_apps.cpp).

Writes, next to OUTPUT.safetensors (normally build/fixtures/):
  tiny_app_llama/        a LlamaForCausalLM (2 layers, GQA 4/2, D=16) trained for 200 steps on the
                         records below (so it writes words), saved with save_pretrained, plus a
                         byte-level BPE tokenizer of 300 tokens trained here
                         (<unk>, <s>, </s> = ids 0, 1, 2) saved with PreTrainedTokenizerFast: what
                         ./linearize, ./generate and ./eval read from a Hugging Face folder
  tiny_app_alpaca.jsonl  40 Alpaca records (instruction, input, output) made from a word list
and OUTPUT.safetensors: a prompt's ids and transformers' greedy continuation of it (12 tokens), with
the text the tokenizer decodes it to, so the test checks ./generate against an independent
implementation.
"""
import json
import os
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from common import Fixture, output_path

out = output_path()
base = os.path.dirname(os.path.abspath(out))
folder = os.path.join(base, "tiny_app_llama")
fx = Fixture(seed=77)
torch.manual_seed(77)

# ---- data -------------------------------------------------------------------------------------------
rng = random.Random(5)
WORDS = ("the a cat dog sat on mat quick brown fox jumps over lazy river mountain tree green blue red "
         "write list three tips staying healthy explain why sky water fire book read learn model attention "
         "linear window feature map train step loss small large fast slow").split()


def sentence(n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


records = [{"instruction": sentence(rng.randint(4, 9)),
            "input": sentence(rng.randint(3, 6)) if i % 3 == 0 else "",
            "output": " ".join(sentence(rng.randint(5, 12)) for _ in range(rng.randint(2, 4)))}
           for i in range(40)]
with open(os.path.join(base, "tiny_app_alpaca.jsonl"), "w") as f:
    for r in records:
        f.write(json.dumps(r) + "\n")

# ---- tokenizer: byte-level BPE, 300 tokens --------------------------------------------------------------
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
corpus = [r["instruction"] + " " + r["input"] + " " + r["output"] for r in records] * 3
tok.train_from_iterator(corpus, trainer=trainer)
hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
assert (hf_tok.unk_token_id, hf_tok.bos_token_id, hf_tok.eos_token_id) == (0, 1, 2)
vocab = len(hf_tok)
assert vocab <= 300, vocab

# ---- model --------------------------------------------------------------------------------------------
cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  rms_norm_eps=1e-5, tie_word_embeddings=False, rope_theta=10000.0,
                  bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(cfg).float()
# 200 steps on the records themselves, so that the model writes words (a random one writes
# stray bytes) and the runs' perplexities mean something.
stream = []
for r in records:
    stream += [1] + hf_tok.encode(r["instruction"] + "\n" + r["input"] + "\n" + r["output"], add_special_tokens=False) + [2]
data = torch.tensor(stream)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
for step in range(200):
    starts = torch.randint(0, len(stream) - 129, (4,))
    batch = torch.stack([data[s:s + 129] for s in starts])
    loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"tiny_app_llama: training loss {loss.item():.3f} after 200 steps")
model.eval()
model.save_pretrained(folder, safe_serialization=True)
hf_tok.save_pretrained(folder)

# ---- greedy generation with transformers ------------------------------------------------------------------
prompt = "The quick brown fox"
ids = torch.tensor([hf_tok.encode(prompt, add_special_tokens=False)])
with torch.no_grad():
    gen = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=2, pad_token_id=2)
new = gen[0, ids.shape[1]:]
text = hf_tok.decode(new, skip_special_tokens=True)
print(f"greedy: {text!r}")
fx.put("prompt_ids", ids[0])
fx.put("greedy_ids", new)
assert text, "empty greedy continuation"
fx.put("greedy_text_utf8", torch.tensor(list(text.encode("utf-8")), dtype=torch.int32))
fx.put("prompt_utf8", torch.tensor(list(prompt.encode("utf-8")), dtype=torch.int32))
fx.save(out)
