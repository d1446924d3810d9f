"""Reference values for every CPU op (tensor/*.h), computed by PyTorch in float64.

For each case "name": inputs name.<input>, output name.y, projection name.r, and gradients
name.d<input> of sum(r * y). Sizes are small but cross every boundary our kernels have
(attention row tiles of 64, odd sizes, GQA groups, ignored labels, repeated token ids).
"""
import math

import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from common import Fixture, output_path

torch.set_default_dtype(torch.float64)
fx = Fixture(seed=1234)


def leaf(name, t):
    fx.put(name, t)
    return t.clone().requires_grad_(True)


# ---- matmul: C = op(A) @ op(B), all four transposes, and a batched case --------------------------
for ta in (0, 1):
    for tb in (0, 1):
        M, N, K = 5, 7, 9
        name = f"matmul_t{ta}{tb}"
        a = leaf(name + ".a", fx.randn(*( (K, M) if ta else (M, K) )))
        b = leaf(name + ".b", fx.randn(*( (N, K) if tb else (K, N) )))
        y = (a.T if ta else a) @ (b.T if tb else b)
        fx.put(name + ".y", y)
        fx.grads(name, y, {"a": a, "b": b})
name = "matmul_batched"
a = leaf(name + ".a", fx.randn(3, 6, 4))
b = leaf(name + ".b", fx.randn(3, 5, 4))  # used transposed
y = a @ b.transpose(1, 2)
fx.put(name + ".y", y)
fx.grads(name, y, {"a": a, "b": b})
name = "linear"  # F.linear(x, w) = x w^T, the shape every projection of the model uses
x = leaf(name + ".x", fx.randn(2, 3, 40))
w = leaf(name + ".w", fx.randn(24, 40))
y = F.linear(x, w)
fx.put(name + ".y", y)
fx.grads(name, y, {"x": x, "w": w})

# ---- elementwise ------------------------------------------------------------------------------------
n = 1000
a = leaf("add.a", fx.randn(n)); b = leaf("add.b", fx.randn(n))
y = a + b; fx.put("add.y", y); fx.grads("add", y, {"a": a, "b": b})
a = leaf("mul.a", fx.randn(n)); b = leaf("mul.b", fx.randn(n))
y = a * b; fx.put("mul.y", y); fx.grads("mul", y, {"a": a, "b": b})
a = leaf("scale.a", fx.randn(n))
y = a * 0.37; fx.put("scale.y", y); fx.grads("scale", y, {"a": a})
x = leaf("silu.x", fx.randn(n, scale=3.0))
y = F.silu(x); fx.put("silu.y", y); fx.grads("silu", y, {"x": x})
g = leaf("swiglu.gate", fx.randn(n, scale=3.0)); u = leaf("swiglu.up", fx.randn(n))
y = F.silu(g) * u; fx.put("swiglu.y", y); fx.grads("swiglu", y, {"gate": g, "up": u})

# ---- embedding (ids repeat, so the backward must scatter-add) -------------------------------------
V, C = 11, 6
idx = torch.tensor([3, 0, 10, 3, 3, 7, 0, 5, 9], dtype=torch.int64)
fx.put("embedding.idx", idx)
wte = leaf("embedding.wte", fx.randn(V, C))
y = F.embedding(idx, wte); fx.put("embedding.y", y); fx.grads("embedding", y, {"wte": wte})

# ---- RMSNorm, as Hugging Face's LlamaRMSNorm computes it ------------------------------------------
x = leaf("rmsnorm.x", fx.randn(6, 40, scale=2.0))
w = leaf("rmsnorm.w", fx.randn(40))
var = x.pow(2).mean(-1, keepdim=True)
y = w * (x * torch.rsqrt(var + 1e-5))
fx.put("rmsnorm.y", y); fx.grads("rmsnorm", y, {"x": x, "w": w})

# ---- RoPE ---------------------------------------------------------------------------------------------
# inv_freq straight from transformers' initialisers (plain, and Llama 3.1 "llama3" scaling).
B, T, H, D = 2, 9, 3, 16
pos = torch.arange(T, dtype=torch.int64) + 5  # a decode-like offset
fx.put("rope.pos", pos)
configs = {
    "plain": LlamaConfig(hidden_size=H * D, num_attention_heads=H, rope_theta=10000.0),
    "llama3": LlamaConfig(hidden_size=H * D, num_attention_heads=H, rope_theta=500000.0,
                          max_position_embeddings=131072,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}
for cname, cfg in configs.items():
    inv_freq = LlamaRotaryEmbedding(cfg).inv_freq
    fx.put(f"rope_{cname}.inv_freq", inv_freq.double())
    # Angles in float64 from HF's (float32) inv_freq; then HF's own rotation code (half-split).
    ang = pos.double()[:, None] * inv_freq.double()[None, :]          # (T, D/2)
    emb = torch.cat([ang, ang], dim=-1)                               # (T, D) as HF builds it
    cos, sin = emb.cos()[None], emb.sin()[None]                       # (1, T, D)
    xh = leaf(f"rope_{cname}_half.x", fx.randn(B, T, H, D))
    # HF works in (B, H, T, D); ours is (B, T, H, D).
    yq, _ = apply_rotary_pos_emb(xh.transpose(1, 2), xh.transpose(1, 2), cos, sin)
    y = yq.transpose(1, 2)
    fx.put(f"rope_{cname}_half.y", y); fx.grads(f"rope_{cname}_half", y, {"x": xh})
    # Interleaved pairs (Meta's original layout): rotate (x[2i], x[2i+1]) as a complex number.
    xi = leaf(f"rope_{cname}_inter.x", fx.randn(B, T, H, D))
    xc = torch.view_as_complex(xi.reshape(B, T, H, D // 2, 2))
    rot = torch.polar(torch.ones_like(ang), ang)[None, :, None, :]    # (1, T, 1, D/2)
    y = torch.view_as_real(xc * rot).reshape(B, T, H, D)
    fx.put(f"rope_{cname}_inter.y", y); fx.grads(f"rope_{cname}_inter", y, {"x": xi})

# ---- causal GQA attention ----------------------------------------------------------------------------
for name, (B, T, H, Hkv, D) in {"attention": (2, 150, 4, 2, 16), "attention_t1": (1, 1, 3, 1, 8),
                                "attention_mha": (1, 70, 2, 2, 8)}.items():
    q = leaf(name + ".q", fx.randn(B, T, H, D))
    k = leaf(name + ".k", fx.randn(B, T, Hkv, D))
    v = leaf(name + ".v", fx.randn(B, T, Hkv, D))
    G = H // Hkv
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(G, 1),
                                       v.transpose(1, 2).repeat_interleave(G, 1),
                                       is_causal=True).transpose(1, 2)
    fx.put(name + ".y", y); fx.grads(name, y, {"q": q, "k": k, "v": v})

# ---- losses and reductions -----------------------------------------------------------------------------
N, V = 7, 13
logits = leaf("cross_entropy.logits", fx.randn(N, V, scale=3.0))
targets = torch.tensor([4, -100, 0, 12, 7, -100, 4], dtype=torch.int64)
fx.put("cross_entropy.targets", targets)
y = F.cross_entropy(logits, targets, ignore_index=-100)
fx.put("cross_entropy.y", y.reshape(1)); fx.grads("cross_entropy", y, {"logits": logits})
a = leaf("mse.a", fx.randn(300)); b = leaf("mse.b", fx.randn(300))
y = F.mse_loss(a, b); fx.put("mse.y", y.reshape(1)); fx.grads("mse", y, {"a": a, "b": b})
x = leaf("sum.x", fx.randn(300))
y = x.sum(); fx.put("sum.y", y.reshape(1)); fx.grads("sum", y, {"x": x})
x = leaf("mean.x", fx.randn(300))
y = x.mean(); fx.put("mean.y", y.reshape(1)); fx.grads("mean", y, {"x": x})

# ---- bf16 rounding, as torch converts float32 -> bfloat16 -----------------------------------------------
special = torch.tensor([0.0, -0.0, 1.0, 1.00390625, 1.0029296875, 1.0048828125, 3.4e38, -3.4e38,
                        1e-40, float("inf"), float("-inf"), 65504.0, 0.1, -2.5e-3], dtype=torch.float32)
vals = torch.cat([special, torch.randn(2000, generator=fx.gen) * 100,
                  torch.randn(2000, generator=fx.gen) * 1e-30])
fx.put("bf16.x", vals.double())
fx.put("bf16.y", vals.to(torch.bfloat16).double())
h = torch.cat([torch.tensor([0.0, 6e-8, 1e-5, 65504.0, -1.0, float("inf")]), torch.randn(1000, generator=fx.gen)])
fx.put("f16.bits", h.to(torch.float16).view(torch.int16).to(torch.int32))
fx.put("f16.y", h.to(torch.float16).double())

fx.save(output_path())
