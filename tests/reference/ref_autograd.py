"""A tiny Llama-style block assembled from the ops, differentiated by PyTorch autograd: the oracle
for our tape (fan-out through the residual stream, parameters used twice, gradient accumulation).

  x (B,T,C) -> h = x + Wo attn(rope(Wq n1(x)), rope(Wk n1(x)), Wv n1(x))
            -> h2 = h + Wd (silu(Wg n2(h)) * Wu n2(h)) -> logits = Wlm n3(h2) -> cross-entropy
"""
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from common import Fixture, output_path

torch.set_default_dtype(torch.float64)
fx = Fixture(seed=7)
B, T, C, H, Hkv, D, FF, V = 2, 70, 32, 4, 2, 8, 48, 50
eps = 1e-5

params = {
    "n1": 1.0 + 0.1 * fx.randn(C), "wq": fx.randn(H * D, C, scale=0.2), "wk": fx.randn(Hkv * D, C, scale=0.2),
    "wv": fx.randn(Hkv * D, C, scale=0.2), "wo": fx.randn(C, H * D, scale=0.2), "n2": 1.0 + 0.1 * fx.randn(C),
    "wg": fx.randn(FF, C, scale=0.2), "wu": fx.randn(FF, C, scale=0.2), "wd": fx.randn(C, FF, scale=0.2),
    "n3": 1.0 + 0.1 * fx.randn(C), "wlm": fx.randn(V, C, scale=0.2),
}
for k, v in params.items():
    fx.put("p." + k, v)
P = {k: v.clone().requires_grad_(True) for k, v in params.items()}
x0 = fx.randn(B, T, C)
fx.put("x", x0)
x = x0.clone().requires_grad_(True)
targets = fx.randint(0, V, B * T).long()
targets[::5] = -100
fx.put("targets", targets)

cfg = LlamaConfig(hidden_size=H * D, num_attention_heads=H, rope_theta=10000.0)
inv_freq = LlamaRotaryEmbedding(cfg).inv_freq.double()
ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None]
emb = torch.cat([ang, ang], -1)
cos, sin = emb.cos()[None], emb.sin()[None]


def rms(z, w):
    return w * (z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + eps))


a = rms(x, P["n1"])
q = F.linear(a, P["wq"]).view(B, T, H, D).transpose(1, 2)
k = F.linear(a, P["wk"]).view(B, T, Hkv, D).transpose(1, 2)
v = F.linear(a, P["wv"]).view(B, T, Hkv, D).transpose(1, 2)
q, k = apply_rotary_pos_emb(q, k, cos, sin)
y = F.scaled_dot_product_attention(q, k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1),
                                   is_causal=True)
h = x + F.linear(y.transpose(1, 2).reshape(B, T, H * D), P["wo"])
m = rms(h, P["n2"])
h2 = h + F.linear(F.silu(F.linear(m, P["wg"])) * F.linear(m, P["wu"]), P["wd"])
logits = F.linear(rms(h2, P["n3"]), P["wlm"]).view(B * T, V)
loss = F.cross_entropy(logits, targets, ignore_index=-100)
loss.backward()
fx.put("loss", loss.reshape(1))
fx.put("logits", logits)
fx.put("dx", x.grad)
for k_, v_ in P.items():
    fx.put("d." + k_, v_.grad)
fx.save(output_path())
