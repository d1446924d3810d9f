"""Reference tokenisations for data/tokenizer.cpp and data/chat_template.cpp, from Hugging Face.

Writes, next to OUTPUT.safetensors (normally build/fixtures/):
  smollm2_tokenizer/       SmolLM2-135M-Instruct's tokenizer, read by transformers from the GGUF
                           file in models/, with SmolLM2's own pre-tokenizer put back (see below)
  smollm2_gguf_tokenizer/  the same, exactly as transformers converts it (GPT-2 regex only)
  llama3_tokenizer/        a small byte-level BPE trained here with Llama 3's pre-tokenizer,
                           special tokens, ignore_merges and BOS post-processor, and Llama 3
                           Instruct's chat template
  tokenizer_cases.json     1000+ test strings; for each tokenizer the ids HF gives them and the
                           text HF decodes those ids to; chat templates rendered by transformers
and OUTPUT.safetensors itself (written last: its presence means the rest is complete; it holds
the counts and the fixture version, which tests/helpers.h checks).
"""
import json
import os
import random

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from common import Fixture, output_path

out_path = output_path()
out_dir = os.path.dirname(os.path.abspath(out_path))
repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
GGUF_DIR, GGUF_NAME = os.path.join(repo, "models"), "SmolLM2-135M-Instruct.Q4_1.gguf"

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>"]
# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template (Llama 3, not 3.1).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

# ---- test strings ----------------------------------------------------------------------------------
rng = random.Random(20240601)
ENGLISH = [
    "The quick brown fox jumps over the lazy dog.", "Hello, world!", "It's a beautiful day, isn't it?",
    "I'm sure they'll say we'd've known.", "SHE'S HERE AND WE'RE LEAVING; THEY'LL FOLLOW.",
    "Don't stop believin'.", "LoLCATs linearizes attention with low-rank adaptation.",
    "Mr. Smith paid $3.50 for 2 coffees at 7:45am.", "e-mail: someone@example.com, url: https://x.org/a?b=c",
    "Once upon a time, in a land far, far away...", "  leading spaces", "trailing spaces   ",
    "Tabs\tbetween\twords", "Line one\nLine two\r\nLine three\rLine four", "ALL CAPS TEXT", "miXeD CaSe WoRdS",
]
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}\n",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "class A:\n\tdef __init__(self):\n\t\tself.x = [1, 2, 3]  # comment\n",
    "if x == 1 and y != 2:\n        pass\n    elif z <= 3:\n\t\tprint('hi')\n",
    "const auto& v = m[\"key\"]; // C++17\n    std::vector<int> xs{1,2,3};",
    "SELECT * FROM t WHERE a >= 10 AND b <> 'x';", "x+=1;y-=2;z*=3;w/=4;", "    \n    \n\n\t\n",
    "lambda x: {k: v for k, v in x.items() if v is not None}",
]
UNICODE = [
    "café naïve résumé Ångström façade", "日本語のテキストです。", "中文字符测试，你好世界！", "한국어 문장입니다.",
    "مرحبا بالعالم", "नमस्ते दुनिया, यह एक परीक्षण है।", "Привет, мир! Ёжик", "Γειά σου Κόσμε", "שלום עולם",
    "สวัสดีชาวโลก", "👍 👍🏽 👍🏿 👨‍👩‍👧‍👦 🏳️‍🌈 😀😃😄 🧑🏽‍💻", "e\u0301 a\u0308 n\u0303 o\u0302\u0323",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357",
    "ﬁ ﬂ ß ẞ ı İ ǅ", "\u00bd \u2153 \u00b2\u00b3 \u2167 \u216b \u0661\u0662\u0663 \uff11\uff12\uff13 \u0967\u0968",
    "\u200b\u200c\u200d\u2060\ufeff", "math: ∑ ∫ ≤ ≥ ≠ ∞ → ⇒ ∀x∈ℝ", "\U0001d54f\U0001d552\U0001d563 \U00010348",
    "x\u00a0y\u3000z\u2003w\u2028v\u2029u\u0085t\u000bs\u000cr\u001cq\u180ep",
    "'ſ '\u212a 'ß 'S'ſ", "\x00\x01\x02\x7f\x1b[0m",
    # bytes SmolLM2 has no token for (HF drops them; the neighbours may then merge)
    "a\x04b", "\x06", "x\x13\x14y", "th\x16e cat\x1d", "\U00040000\U00080000",
]
CONTRACTIONS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'Ll",
                "'d", "'D", "’s", "''s", "'", "s'"]
PUNCT = ["!!!", "...", "?!?", "---", "***", "<<>>", "{[()]}", "@#$%^&*", "~~~", "|||", ";;", "--->", "=>", "::",
         "\"'\"", "``", "_", "__init__", "…", "«»", "¿¡", "。、", "—", "‘’“”"]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<|begin_of_text|>", "<|eot_id|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>", "<|im_sta", "im_end|>", "<|", "|>"]
WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", "\u00a0", "\u3000",
              "\u2003", "\x0b", "\x0c", "\x85", "\u2028"]


def digits():
    n = rng.choice([1, 2, 3, 4, 5, 6, 7, 9, 12, 17, 25, 40])
    s = "".join(rng.choice("0123456789") for _ in range(n))
    return rng.choice([s, " " + s, s + ".5", "-" + s, "$" + s, s[:3] + "," + s[3:], "x" + s, s + "th"])


def fragment():
    kind = rng.randrange(8)
    if kind == 0: return rng.choice(ENGLISH)
    if kind == 1: return rng.choice(CODE)
    if kind == 2: return rng.choice(UNICODE)
    if kind == 3: return digits()
    if kind == 4: return rng.choice(["word", "WE", "They", "it", "X", "o"]) + rng.choice(CONTRACTIONS)
    if kind == 5: return rng.choice(PUNCT)
    if kind == 6: return rng.choice(SPECIALS)
    return "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 4)))


def mixed(k):
    return "".join(fragment() + (rng.choice(WHITESPACE) if rng.random() < 0.5 else "") for _ in range(k))


texts = ["", " ", "a", "\n", "hello", "Hello world", "  ", "\t", "   x", "x   ", "a  b   c    d"]
texts += ENGLISH + CODE + UNICODE + PUNCT + SPECIALS + WHITESPACE
texts += [w + c for w in ["it", "IT", "He", " we"] for c in CONTRACTIONS]
texts += [digits() for _ in range(60)] + ["".join(str(i) for i in range(n)) for n in (1, 5, 11, 30)]
texts += ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<|im_start|><|im_end|>",
          "<<|im_start|>>", "<|begin_of_text|><|begin_of_text|>",
          "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", " zyxwvut", "zyxwvut zyxwvut!", "zyxwvuts",
          "<think>\nreasoning</think>answer", "<think>x</think>", "a<think>\n\nb", "<think\n>"]
texts += [mixed(rng.randint(1, 6)) for _ in range(800)]
texts += [mixed(rng.randint(30, 120)) for _ in range(10)]  # long: thousands of characters
texts += [" " * 3000, "a" * 3000, "\n" * 500 + "x", "9" * 1000, "😀" * 300,
          "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(4000))]

# Chat conversations (rendered by transformers below; their text is also a test string).
CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "  spaced out \n\n"}, {"role": "assistant", "content": "\tok\u3000"}],
    [{"role": "assistant", "content": "I start."}],
    [{"role": "user", "content": "Ça va? 日本 👍🏽\ndef f():\n\treturn 1\n"}],
]

# ---- the tokenizers ----------------------------------------------------------------------------------
smol = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)
smol.save_pretrained(os.path.join(out_dir, "smollm2_gguf_tokenizer"))
# transformers (5.23) builds this tokenizer with the plain GPT-2 ByteLevel pre-tokenizer: it maps
# tokenizer.ggml.pre only for Llama-3-like names and ignores "smollm". SmolLM2's own
# tokenizer.json (HuggingFaceTB/SmolLM2-135M-Instruct) splits every digit first:
# Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)], and llama.cpp's "smollm"
# pre-tokenizer does the same (\p{N}, then the GPT-2 regex). So numbers like "2024" tokenise
# differently. We restore SmolLM2's pre-tokenizer for the main reference (what the model was
# trained with) and keep the unmodified conversion as a second reference for the plain-ByteLevel
# path. Everything else (vocab, merges, 17 special tokens, no BOS) agrees with the original.
smol_fixed = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)
smol_fixed.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
smol_fixed.save_pretrained(os.path.join(out_dir, "smollm2_tokenizer"))


def train_llama3_like():
    """A small BPE with Llama 3's tokenizer.json layout (its real vocabulary is not available here)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus_rng = random.Random(7)
    corpus = [mixed(corpus_rng.randint(1, 8)) for _ in range(3000)] + ENGLISH * 20 + CODE * 20 + UNICODE * 10
    trainer = trainers.BpeTrainer(vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    spec = json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = True  # as Llama 3's tokenizer.json: a word in the vocab is taken whole
    # Llama 3's vocabulary holds words that its merges cannot build; only ignore_merges reaches
    # them. Two such tokens make that rule visible in the cases (" zyxwvut", "zyxwvut").
    for word in ("\u0120zyxwvut", "zyxwvut"):
        spec["model"]["vocab"][word] = len(spec["model"]["vocab"])
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens(LLAMA3_SPECIALS)  # ids after the vocabulary, as in Llama 3
    # Plain (not special) added tokens, one a prefix of another: matched longest first.
    tok.add_tokens(["<think>", "<think>\n", "</think>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


llama = PreTrainedTokenizerFast(tokenizer_object=train_llama3_like(), bos_token="<|begin_of_text|>",
                                eos_token="<|eot_id|>")
llama.chat_template = LLAMA3_TEMPLATE
assert llama.encode("hi")[0] == llama.bos_token_id == llama.backend_tokenizer.token_to_id("<|begin_of_text|>")
llama.save_pretrained(os.path.join(out_dir, "llama3_tokenizer"))

# ---- chat templates ----------------------------------------------------------------------------------
chat = []
for fmt, tok in (("chatml", smol), ("llama3", llama)):
    for messages in CHATS:
        for gen in (False, True):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            chat.append({"format": fmt, "messages": messages, "add_generation_prompt": gen, "text": text})
            texts.append(text)
assert "SmolLM" in smol.chat_template and "<|im_start|>" in smol.chat_template

# ---- reference ids and decodes -----------------------------------------------------------------------
for t in texts:
    t.encode("utf-8")  # every string is valid UTF-8 (raises on a lone surrogate)
entries = []
for name, folder, tok in (("smollm2", "smollm2_tokenizer", smol_fixed),
                          ("smollm2_gguf", "smollm2_gguf_tokenizer", smol),
                          ("llama3", "llama3_tokenizer", llama)):
    back = tok.backend_tokenizer
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    for t, i in zip(texts, ids):
        assert back.encode(t, add_special_tokens=False).ids == i
    entries.append({
        "name": name, "json": folder + "/tokenizer.json",
        "bos_id": -1 if tok.bos_token_id is None else tok.bos_token_id,
        "eos_id": -1 if tok.eos_token_id is None else tok.eos_token_id,
        "vocab_size": back.get_vocab_size(with_added_tokens=True),
        # ids of "Hello world" with the post-processor's special tokens (BOS for Llama 3)
        "with_special": tok.encode("Hello world", add_special_tokens=True),
        "ids": ids,
        "decoded": [back.decode(i, skip_special_tokens=False) for i in ids],
        "decoded_skip": [back.decode(i, skip_special_tokens=True) for i in ids],
    })
    print(f"{name}: {sum(map(len, ids))} tokens over {len(texts)} strings")

# How much the choices above matter (printed, so a reader can see the cases are not vacuous).
plain = [smol.encode(t, add_special_tokens=False) for t in texts]
print("strings where SmolLM2's digit split changes the ids:", sum(a != b for a, b in zip(plain, entries[0]["ids"])))
spec = json.loads(llama.backend_tokenizer.to_str())
spec["model"]["ignore_merges"] = False
no_ignore = Tokenizer.from_str(json.dumps(spec))
print("strings where Llama 3's ignore_merges changes the ids:",
      sum(no_ignore.encode(t, add_special_tokens=False).ids != i for t, i in zip(texts, entries[2]["ids"])))

cases = {"texts": texts, "tokenizers": entries, "chat": chat,
         "templates": {"chatml": smol.chat_template, "llama3": LLAMA3_TEMPLATE}}
with open(os.path.join(out_dir, "tokenizer_cases.json.tmp"), "w", encoding="utf-8") as f:
    json.dump(cases, f, ensure_ascii=False)
os.replace(os.path.join(out_dir, "tokenizer_cases.json.tmp"), os.path.join(out_dir, "tokenizer_cases.json"))

fx = Fixture(seed=0)
fx.put("n_texts", torch.tensor([len(texts)], dtype=torch.int32))
fx.put("n_tokenizers", torch.tensor([len(entries)], dtype=torch.int32))
fx.save(out_path)
