"""Reference log-likelihoods for ./eval's zero-shot and 5-shot tasks (nn/eval/harness.h), computed by
Hugging Face transformers on SmolLM2-135M-Instruct (the GGUF file in models/), on prompts this
script builds itself from the raw files in ../shared/data/eval/ following the paper's harness
(LOLCATS.md section 8), never from our C++ output:
  piqa        "Question: {goal}\nAnswer:"  +  " " + sol1 / sol2
  arc_*       "Question: {question}\nAnswer:"  +  " " + choice
  hellaswag   preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())  +  " " + preprocess(ending),
              where our copy stores "label: ctx" with ctx_b not capitalised: the first letter after the last
              ". " is upper-cased (see data/SOURCES.md)
  winogrande  sentence[:blank] + option  +  " " + sentence[blank+1:].strip()   (partial scoring)
  mmlu        "The following are multiple choice questions (with answers) about {subject}.\n\n"
              + the first 5 dev rows "{q.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer: {X}" joined by "\n\n"
              + "\n\n" + the test question formatted the same up to "Answer:"  +  " A" / " B" / " C" / " D"
No BOS; context and continuation tokenised separately (trailing whitespace of a context moved onto
its continuation); loglik = sum over continuation tokens of log_softmax(logits)[token], from one
forward of context + continuation per request (without its last token, which predicts nothing
scored; MMLU's one-token choices thus share one forward).

Writes OUTPUT.safetensors with, per task: "{task}.index" (the item's index in the task's file order;
MMLU: subjects sorted by name, rows in file order), "{task}.nchoices", "{task}.logprob" (F64, the
items' choices one after another), "{task}.greedy", "{task}.ntokens"; and beside it eval/:
  ref_eval.json  the same items' context and continuation strings and token ids
  small.tar      a tar written by Python's tarfile (ustar, a long name in the prefix field, a
                 directory, an empty file), with small_tar.json: its files and contents
"""
import csv
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile

import torch
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import Fixture, output_path

out = output_path()
side = os.path.join(os.path.dirname(os.path.abspath(out)), "eval")
os.makedirs(side, exist_ok=True)
EVAL = os.environ.get("LOLCATS_EVAL_DIR", "../shared/data/eval")
if not os.path.isdir(EVAL):
    sys.exit(f"{EVAL} is missing (the evaluation sets, see ../shared/data/SOURCES.md)")
GGUF_DIR, GGUF_NAME = "models", "SmolLM2-135M-Instruct.Q4_1.gguf"
if not os.path.exists(os.path.join(GGUF_DIR, GGUF_NAME)):
    sys.exit(f"{GGUF_DIR}/{GGUF_NAME} is missing: run `make model`")

# ---- a small tar from Python's tarfile (for the tar reader) -----------------------------------------
tar_files = {"a.txt": b"hello\n", "dir/empty.csv": b"", "dir/" + "long_" * 25 + "/name.csv": b"x,\"y\"\r\n" * 200}
with tarfile.open(os.path.join(side, "small.tar"), "w", format=tarfile.USTAR_FORMAT) as t:
    d = tarfile.TarInfo("dir")
    d.type = tarfile.DIRTYPE
    t.addfile(d)
    for name, data in tar_files.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
with open(os.path.join(side, "small_tar.json"), "w") as f:
    json.dump([{"name": n, "data": d.decode()} for n, d in tar_files.items()], f)

# ---- the raw files -----------------------------------------------------------------------------------
def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def zstd_text(path):
    return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout


def piqa():
    docs = jsonl(f"{EVAL}/piqa/valid.jsonl")
    labels = [int(x) for x in open(f"{EVAL}/piqa/valid-labels.lst").read().split()]
    return [{"ctx": ["Question: " + d["goal"] + "\nAnswer:"], "cont": [" " + d["sol1"], " " + d["sol2"]],
             "gold": g} for d, g in zip(docs, labels)]


def arc(path):
    return [{"ctx": ["Question: " + d["question"] + "\nAnswer:"], "cont": [" " + c for c in d["choices"]],
             "gold": d["gold"]} for d in jsonl(path)]


def hs_preprocess(text):  # the harness's HellaSwag preprocess
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag():
    lines = zstd_text(f"{EVAL}/hellaswag/hellaswag_val_full.txt.zst").decode("utf-8").split("\n")
    items = []
    for i in range(0, len(lines) - 5, 6):
        ctx = lines[i]
        cut = ctx.rfind(". ")
        if cut >= 0 and len(ctx) > cut + 2:  # ctx_b (after the last ". ") gets its capital back
            head, frag = ctx[:cut + 2], ctx[cut + 2:]
            if "a" <= frag[0] <= "z":
                ctx = head + frag[0].upper() + frag[1:]
        items.append({"ctx": [hs_preprocess(ctx)], "cont": [" " + hs_preprocess(e) for e in lines[i + 2:i + 6]],
                      "gold": int(lines[i + 1])})
    return items


def winogrande():
    items = []
    for d in jsonl(f"{EVAL}/winogrande/dev.jsonl"):
        blank = d["sentence"].index("_")
        target = " " + d["sentence"][blank + 1:].strip()
        items.append({"ctx": [d["sentence"][:blank] + o for o in (d["option1"], d["option2"])],
                      "cont": [target, target], "gold": int(d["answer"]) - 1})
    return items


def mmlu():
    data = zstd_text(f"{EVAL}/mmlu/mmlu_data.tar.zst")
    dev, test = {}, {}
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            for split, into in (("dev", dev), ("test", test)):
                mt = re.fullmatch(rf"data/{split}/(.+)_{split}\.csv", m.name)
                if mt:
                    text = t.extractfile(m).read().decode("utf-8")
                    into[mt.group(1)] = list(csv.reader(io.StringIO(text, newline="")))

    def fmt(row):
        return row[0].strip() + "\n" + "".join(f"{k}. {c}\n" for k, c in zip("ABCD", row[1:5])) + "Answer:"

    items = []
    for subject in sorted(test):
        shots = "".join(fmt(r) + " " + r[5] + "\n\n" for r in dev[subject][:5])
        desc = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        for r in test[subject]:
            items.append({"ctx": [desc + shots + fmt(r)], "cont": [" A", " B", " C", " D"], "gold": "ABCD".index(r[5]),
                          "subject": subject})
    return items


tasks = {"piqa": piqa(), "arc_easy": arc(f"{EVAL}/arc_easy/ARC-Easy_test.jsonl"),
         "arc_challenge": arc(f"{EVAL}/arc_challenge/ARC-Challenge_test.jsonl"), "hellaswag": hellaswag(),
         "winogrande": winogrande(), "mmlu": mmlu()}
sizes = {"piqa": 1838, "arc_easy": 2376, "arc_challenge": 1172, "hellaswag": 10042, "winogrande": 1267, "mmlu": 14042}
for name, items in tasks.items():  # the known sizes (data/SOURCES.md)
    assert len(items) == sizes[name], (name, len(items))

# ---- which items: the first 10 and 10 drawn at random; ARC also a 3- and a 5-choice one; MMLU the
# first 7 of three subjects (one with CRLF inside quoted fields, one with digits) --------------------
rng = random.Random(14)
picked = {}
for name, items in tasks.items():
    if name == "mmlu":
        idx = []
        for subject in ("abstract_algebra", "college_mathematics", "world_religions"):
            first = next(i for i, it in enumerate(items) if it["subject"] == subject)
            idx += range(first, first + 7)
        assert any("\r\n" in items[i]["ctx"][0] for i in idx)
    else:
        idx = list(range(10)) + rng.sample(range(10, len(items)), 10)
        if name.startswith("arc"):
            idx += [next(i for i, it in enumerate(items) if len(it["cont"]) == k) for k in (3, 5)]
    picked[name] = sorted(set(idx))

# ---- the model and SmolLM2's own tokenizer (digits split first, see ref_tokenizer.py) ----------------
tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)
tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
model = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME, dtype=torch.float32).eval()
# One thread: fixtures may be made side by side (make -j), and oversubscribed OpenMP threads
# spin-wait, which made this script 20x slower on a 2-core machine.
torch.set_num_threads(1)
forwards = {}


def forward(ids):
    """Logits (T, V) of one sequence; the choices of an MMLU question share theirs (see loglik)."""
    key = tuple(ids)
    if key not in forwards:
        with torch.no_grad():
            forwards.clear()
            forwards[key] = model(torch.tensor([ids])).logits[0]
    return forwards[key]


def encode(text):
    return tok.encode(text, add_special_tokens=False)


def loglik(ctx, cont):
    n_spaces = len(ctx) - len(ctx.rstrip())  # trailing whitespace moves onto the continuation
    if n_spaces > 0:
        cont, ctx = ctx[-n_spaces:] + cont, ctx[:-n_spaces]
    c, k = encode(ctx), encode(cont)
    # The continuation's tokens are predicted by positions len(c)-1 .. len(c)+len(k)-2 of the
    # forward of context + continuation; causal attention: its last token changes none of them,
    # so the forward of c + k[:-1] gives the same rows.
    logits = forward(c + k[:-1])[len(c) - 1:].double()
    logp = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(k)
    lp = logp.gather(1, target[:, None]).sum().item()
    greedy = bool((logp.argmax(-1) == target).all())
    return lp, greedy, c, k


fx = Fixture(seed=14)
strings = {}
for name, idx in picked.items():
    lps, greedy, ntok, nch, recs = [], [], [], [], []
    for i in idx:
        it = tasks[name][i]
        rec = {"index": i, "contexts": it["ctx"], "continuations": it["cont"], "context_ids": [], "continuation_ids": []}
        for j, cont in enumerate(it["cont"]):
            lp, g, c, k = loglik(it["ctx"][j if len(it["ctx"]) > 1 else 0], cont)
            lps.append(lp), greedy.append(int(g)), ntok.append(len(k))
            rec["context_ids"].append(c), rec["continuation_ids"].append(k)
        nch.append(len(it["cont"]))
        recs.append(rec)
    strings[name] = recs
    fx.put(f"{name}.index", torch.tensor(idx))
    fx.put(f"{name}.nchoices", torch.tensor(nch))
    fx.put(f"{name}.logprob", torch.tensor(lps, dtype=torch.float64))
    fx.put(f"{name}.greedy", torch.tensor(greedy))
    fx.put(f"{name}.ntokens", torch.tensor(ntok))
    print(f"{name}: {len(idx)} items, {len(lps)} requests, continuation tokens {min(ntok)}..{max(ntok)}")
with open(os.path.join(side, "ref_eval.json"), "w") as f:
    json.dump(strings, f, ensure_ascii=False)
fx.save(out)
