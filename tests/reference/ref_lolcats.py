"""Reference values for the LoLCATs attention layer: a PyTorch float64 transcription of LOLCATS.md
section 2 (the Hedgehog feature map of 2.1 and the hybrid window + linear attention of 2.2), written
from that text alone, with plain T x T masks (the O(T^2) form the reference implementation uses).
Never derived from our C++ (lolcats/*.cpp); tests/test_lolcats_reference.cpp composes our kernels
and compares.

Layouts follow our kernels: q (B, T, H, D); k, v (B, T, Hkv, D); Wq, Wk (H, D, Fh); w (H);
y (B, T, H, D); phiq, phik (B, T, H, 2 Fh). For each case "NAME" (NAME = VARIANT_T<T>[_SUFFIX]):
  NAME.q .k .v .Wq .Wk .w    inputs (float32-representable, stored as F64)
  NAME.y                     output
  NAME.r                     random projection; gradients are of sum(r * y)
  NAME.dq .dk .dv .dWq .dWk  gradients
  NAME.dw                    gradient of the window logit (not for the linear variant, where w
                             does not enter the output)
  NAME.phiq .phik            the feature maps themselves (a few cases only)
"""
import math

import torch

from common import Fixture, output_path

torch.set_default_dtype(torch.float64)
fx = Fixture(seed=2410)  # arXiv 2410.10254

C = 64  # LOLCATS.md l.45: blocks of C = 64 tokens, aligned to token 0; l.66: SW window of 64 keys
CLAMP = 1e-12  # LOLCATS.md l.38: "then clamp at 1e-12"


# ---- 2.1 Hedgehog feature map ----------------------------------------------------------------------
def hedgehog(x, W):
    """x (B, T, H, D), already repeated to H heads; W (H, D, Fh) -> phi (B, T, H, 2 Fh).
    l.36: z = x @ W[h] (per head h); l.37: phi = concat(softmax(z), softmax(-z)), two separate
    softmaxes over the Fh features; l.38: then clamp at 1e-12."""
    z = torch.einsum("bthd,hdf->bthf", x, W)
    phi = torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)
    return phi.clamp(min=CLAMP)


def identity_init(H, D, Fh):
    """l.39: W[h] = first Fh columns of the identity (z = x[:Fh])."""
    return torch.eye(D)[:, :Fh].expand(H, D, Fh).clone()


# ---- 2.2 masks: which keys j each query i sees through the window and through the linear part -------
def masks(T, variant):
    """Boolean (T, T) window and linear masks, rows = queries i, columns = keys j."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    causal = j <= i  # l.44: keys j <= i
    if variant == "terrace":
        # l.45-46: query i in block b = i // C; W(i) = all j <= i in blocks b-1 and b;
        # Lin(i) = every j in blocks <= b-2.
        bi, bj = i // C, j // C
        window = causal & (bj >= bi - 1)
        linear = bj <= bi - 2
    elif variant == "sw":
        # l.66: W(i) = {i-63 .. i} (64 keys incl. self), Lin(i) = {j <= i-64}.
        window = causal & (j >= i - (C - 1))
        linear = j <= i - C
    elif variant == "linear":
        # l.41 "pure linear attention without the window (Hedgehog only)": W(i) = {}, Lin(i) = {j <= i}.
        window = torch.zeros(T, T, dtype=torch.bool)
        linear = causal
    elif variant == "terrace_ref":
        return reference_masks(T)
    else:
        raise ValueError(variant)
    assert not (window & linear).any() and not ((window | linear) & ~causal).any()
    return window, linear


def reference_masks(T):
    """Terrace as the reference implementation builds its masks (get_masks in its
    linear_window_attention_tk.py), transcribed step by step in torch, for q_len = k_len = T:
    a block-diagonal matrix of ones for a whole number m = ceil(T / C) of blocks, plus the same
    rolled C columns to the left (the terrace: each block also sees the one before; the roll wraps
    block 0 onto block m-1, above the diagonal, except for m = 1, where the roll is the matrix
    itself and every entry becomes 2); the LAST T rows and columns kept (so the blocks end at the
    sequence's end); then window = tril(mask) and linear = tril(1 - mask), each taken as "nonzero"
    (the reference fills where mask.bool() is False). For m = 1 both are nonzero on every causal pair."""
    m = math.ceil(T / C)
    mask = torch.block_diag(*[torch.ones(C, C)] * m)
    mask = mask + torch.roll(mask, -C, -1)
    mask = mask[-T:, -T:]
    window = torch.tril(mask).to(torch.int64).bool()
    linear = torch.tril(1 - mask).to(torch.int64).bool()
    return window, linear


# ---- 2.2 hybrid attention ------------------------------------------------------------------------------
def lolcats_attention(q, k, v, Wq, Wk, w, variant):
    """q (B, T, H, D); k, v (B, T, Hkv, D); Wq, Wk (H, D, Fh); w (H) -> y (B, T, H, D), phiq, phik."""
    B, T, H, D = q.shape
    G = H // k.shape[2]
    # l.31-32: k and v are repeated to H heads BEFORE the feature map (GQA, repeat_interleave:
    # query head h uses key/value head h // G), so every query head has its own key feature map.
    k = k.repeat_interleave(G, dim=2)
    v = v.repeat_interleave(G, dim=2)
    phiq = hedgehog(q, Wq)  # l.35: separate maps for q and k
    phik = hedgehog(k, Wk)
    # to (B, H, T, .)
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    pq, pk = phiq.transpose(1, 2), phik.transpose(1, 2)

    window, linear = masks(T, variant)
    # l.52: numerator and shared normaliser, built from the two parts below.
    num = torch.zeros(B, H, T, D)
    den = torch.zeros(B, H, T, 1)
    if window.any():
        s = qh @ kh.transpose(-1, -2) / math.sqrt(D)                  # l.44: s_ij = q_i . k_j / sqrt(D)
        s_win = s.masked_fill(~window, float("-inf"))
        m = torch.amax(s_win, dim=-1, keepdim=True)                   # l.49: max over W(i) only (no detach)
        g = torch.sigmoid(w).view(1, H, 1, 1)                         # l.47: g_h = sigmoid(w_h)
        A = g * torch.exp(s_win - m)                                  # l.50: A_ij = g_h exp(s_ij - m_i), j in W(i)
        num = num + A @ vh
        den = den + A.sum(-1, keepdim=True)
    Bm = (pq @ pk.transpose(-1, -2)) * linear                         # l.50: B_ij = phi_q(q_i).phi_k(k_j), j in Lin(i)
    num = num + Bm @ vh
    den = den + Bm.sum(-1, keepdim=True)
    y = num / den                                                     # l.51-52: one shared normaliser, no eps
    return y.transpose(1, 2), phiq, phik                              # (B, T, H, D)


def leaf(name, t):
    fx.put(name, t)
    return t.clone().requires_grad_(True)


def case(name, variant, T, B=2, H=4, Hkv=2, D=16, Fh=8, init="random", wscale=0.5, store_phi=False):
    q = leaf(name + ".q", fx.randn(B, T, H, D))      # post-RoPE, unscaled (l.36)
    k = leaf(name + ".k", fx.randn(B, T, Hkv, D))
    v = leaf(name + ".v", fx.randn(B, T, Hkv, D))
    if init == "identity":
        Wq = leaf(name + ".Wq", identity_init(H, D, Fh))
        Wk = leaf(name + ".Wk", identity_init(H, D, Fh))
    else:
        # z = x W has std ~ wscale sqrt(D) = 2 at wscale 0.5: softmaxes are far from flat.
        Wq = leaf(name + ".Wq", fx.randn(H, D, Fh, scale=wscale))
        Wk = leaf(name + ".Wk", fx.randn(H, D, Fh, scale=wscale))
    w = leaf(name + ".w", fx.randn(H))
    y, phiq, phik = lolcats_attention(q, k, v, Wq, Wk, w, variant)
    fx.put(name + ".y", y)
    if store_phi:
        fx.put(name + ".phiq", phiq)
        fx.put(name + ".phik", phik)
    inputs = {"q": q, "k": k, "v": v, "Wq": Wq, "Wk": Wk}
    if variant != "linear":
        inputs["w"] = w
    fx.grads(name, y, inputs)


# T = 1 (a single key), 37 (inside block 0), 64 (exactly one block), 65 (first key of block 1),
# 130 (first queries of block 2, the first to see keys through the linear part in terrace), 200.
for variant in ("terrace", "sw", "linear"):
    for T in (1, 37, 64, 65, 130, 200):
        case(f"{variant}_T{T}", variant, T, store_phi=(variant == "terrace" and T == 130))
    # Identity init of both maps (l.39), as all published results start.
    case(f"{variant}_T130_identity", variant, 130, init="identity", store_phi=(variant == "terrace"))
# Large feature-map weights: many features fall under the 1e-12 clamp (its gradient is 0 there).
case("terrace_T130_clamp", "terrace", 130, wscale=8.0, store_phi=True)
# Terrace under the reference implementation's mask: T <= 64 (window and linear overlap), T = 65
# (block 0 holds one token), 100 and 200 (end-aligned blocks), 128 (a multiple of 64: the paper's).
for T in (1, 37, 64, 65, 100, 128, 200):
    case(f"terrace_ref_T{T}", "terrace_ref", T)

fx.save(output_path())
