"""Reference GGUF files and their expected contents, written by the `gguf` Python package (the
llama.cpp project's own reader/writer), never by our C++.

Writes, next to the fixture, into gguf/:
  small.gguf   every metadata value type (scalars, strings, arrays of strings/ints/floats/bools),
               general.alignment = 64 (not the default 32), and one tensor per supported type and
               shape (F32, F16, BF16, Q8_0, Q4_0, Q4_1), plus one Q4_K tensor that we do not
               dequantise (to check the error message)
  small.json   what the C++ reader must report: every key with its type and value, the tensors in
               file order with their PyTorch-order shapes and ggml types
The fixture (ref_gguf.safetensors) holds the expected dequantised values, computed by
gguf.quants.dequantize, for every tensor of small.gguf ("<name>"), and a few rows of real tensors of
the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf: "model.<tensor>.rows" at row indices
"model.<tensor>.row_idx").
"""
import json
import math
import os

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q, GGUFReader, GGUFValueType as V, GGUFWriter
from gguf.quants import dequantize, quantize

from common import Fixture, output_path

MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

out = output_path()
side = os.path.join(os.path.dirname(out), "gguf")
os.makedirs(side, exist_ok=True)
fx = Fixture(seed=4242)

# ---- small.gguf: metadata of every type ------------------------------------------------------------
w = GGUFWriter(os.path.join(side, "small.gguf"), arch="llama")
w.add_custom_alignment(64)
meta = {"general.architecture": ("STRING", "llama"), "general.alignment": ("UINT32", 64)}
f32 = lambda x: float(np.float32(x))  # the value a FLOAT32 key really holds
scalars = [
    ("test.u8", V.UINT8, 200), ("test.i8", V.INT8, -100), ("test.u16", V.UINT16, 60000),
    ("test.i16", V.INT16, -30000), ("test.u32", V.UINT32, 4000000000), ("test.i32", V.INT32, -2000000000),
    ("test.u64", V.UINT64, 2**40 + 3), ("test.u64_huge", V.UINT64, 2**63 + 5), ("test.i64", V.INT64, -(2**50) - 1),
    ("test.f32", V.FLOAT32, 0.1), ("test.f64", V.FLOAT64, math.pi), ("test.true", V.BOOL, True),
    ("test.false", V.BOOL, False), ("test.string", V.STRING, "héllo, wörld ✓"), ("test.empty_string", V.STRING, ""),
]
for key, vt, val in scalars:
    w.add_key_value(key, val, vt)  # add_key_value, not add_string: add_string drops empty strings
    meta[key] = (vt.name, f32(val) if vt == V.FLOAT32 else val)
arrays = [
    ("test.arr_i32", V.INT32, [1, -2, 2**31 - 1]),
    ("test.arr_u8", V.UINT8, [0, 7, 255]),
    ("test.arr_i64", V.INT64, [2**40, -7]),
    ("test.arr_f32", V.FLOAT32, [0.5, -1.25, 3e-5]),
    ("test.arr_f64", V.FLOAT64, [1e-300, -2.5]),
    ("test.arr_bool", V.BOOL, [True, False, True]),
    ("test.arr_str", V.STRING, ["a", "", "ünïcödé", "a longer string with spaces"]),  # last: see test_gguf.cpp
]
for key, vt, val in arrays:
    w.add_key_value(key, val, V.ARRAY, sub_type=vt)
    meta[key] = ("ARRAY of " + vt.name, [f32(x) for x in val] if vt == V.FLOAT32 else val)

# ---- small.gguf: tensors -----------------------------------------------------------------------------
tensors = []
for qt in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1):
    for shape in ((3, 64), (2, 5, 32), (32,), (2, 1, 2, 32)):
        name = f"{qt.name.lower()}.{'x'.join(map(str, shape))}"
        x = fx.randn(*shape, scale=2.0).float().numpy()
        x.reshape(-1, 32)[0] = 0  # an all-zero block: scale d = 0
        x.reshape(-1)[-1] = 1e4   # a large value, so the last block's scale is large
        if qt == Q.F32:
            data = x
        elif qt == Q.F16:
            data = x.astype(np.float16)
        else:
            data = quantize(x, qt)  # uint8 bytes, shape (..., bytes per row)
        w.add_tensor(name, data, raw_dtype=None if qt in (Q.F32, Q.F16) else qt)
        # The oracle: the package's own dequantisation of the bytes it wrote.
        want = dequantize(data.view(np.uint8) if qt == Q.F16 else data, qt)
        fx.put(name, torch.from_numpy(np.ascontiguousarray(want, dtype=np.float32)).reshape(shape))
        tensors.append({"name": name, "shape": list(shape), "type": int(qt)})
# A Q4_K tensor (raw bytes: one 256-element block per row) that the reader must refuse to dequantise.
rng = np.random.default_rng(7)
w.add_tensor("blk.0.attn_q.weight", rng.integers(0, 256, (2, 144), dtype=np.uint8), raw_dtype=Q.Q4_K)
tensors.append({"name": "blk.0.attn_q.weight", "shape": [2, 256], "type": int(Q.Q4_K)})
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
with open(os.path.join(side, "small.json"), "w") as f:
    json.dump({"metadata": {k: {"type": t, "value": v} for k, (t, v) in meta.items()},
               "keys": list(meta), "tensors": tensors}, f, indent=1, ensure_ascii=False)

# Check that the package reads back what we promise the C++ reader will see.
r = GGUFReader(os.path.join(side, "small.gguf"))
assert r.alignment == 64 and [t.name for t in r.tensors] == [t["name"] for t in tensors]
assert list(r.fields)[3:] == list(meta), list(r.fields)

# ---- the real model: a few rows of a Q4_1, a Q8_0 and an F32 tensor ---------------------------------
model = GGUFReader(MODEL)
by_name = {t.name: t for t in model.tensors}
for name, rows in (("blk.0.attn_q.weight", [0, 1, 300, 575]), ("blk.29.ffn_down.weight", [0, 575]),
                   ("token_embd.weight", [0, 1, 49151]), ("blk.0.attn_norm.weight", None)):
    t = by_name[name]
    full = dequantize(np.asarray(t.data), t.tensor_type)
    full = full.reshape(tuple(reversed(t.shape.tolist())))  # PyTorch order
    if rows is None:
        fx.put(f"model.{name}.rows", torch.from_numpy(full.astype(np.float32)).reshape(1, -1))
        rows = [0]
    else:
        fx.put(f"model.{name}.rows", torch.from_numpy(full[rows].astype(np.float32)))
    fx.put(f"model.{name}.row_idx", torch.tensor(rows, dtype=torch.int32))
fx.save(out)
