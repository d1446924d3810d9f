"""Reference values for decoding with a sparse global cache (LoLA, LOLCATS.md section 9): a PyTorch
float64 transcription, token after token, of the three memories per query head (the softmax
window, a cache of at most G key/value pairs, the linear state S, z), written from LOLCATS.md
section 9 and from the selection and memory handling of LoLA's public code (its LoLAState: the
cache filled while it has room, then the cache and the block leaving the window ranked together,
the G best kept, the rest summed into the state), applied to our layer's attention. Never derived
from our C++; tests/test_sparse_cache.cpp drives lolcats/recurrent.h's memory with these inputs.

Where this reading differs from LoLA's code, on purpose (LOLCATS.md section 9):
  - the score is the self-recall error against the current state, every cache pair re-scored
    each time a block leaves (the code's latest version keeps each pair's first score and uses
    another score);
  - the window weighs g and the linear term 1, our terrace layer's weights (the code: 1 - g, g);
  - ties go to the older key (the code's argsort breaks them as it happens to): candidates are
    ranked by (score descending, position ascending), and the cache keeps its pairs in position
    order;
  - sinks (ours, not LoLA's, lolcats/sparse_cache.h): the sequence's first N keys rank before every
    other candidate, older first.

Layouts follow our kernels: q (T, H, D); k, v (T, Hkv, D); Wq, Wk (H, D, Fh); w (H) the window
logits. For each case NAME = VARIANT_T<T>_G<G>[_S<sinks>][_SUFFIX]:
  NAME.q .k .v .Wq .Wk .w    inputs (float32-representable, stored as F64)
  NAME.y                     the layer's output, (T, H, D)
  NAME.cached                (H, G) the positions in each head's cache after the last token, in
                             position order, -1 where the cache is not full (G = 0: absent)
"""
import math

import torch

from common import Fixture, output_path

torch.set_default_dtype(torch.float64)
fx = Fixture(seed=2505)  # arXiv 2505.23666

C = 64         # LOLCATS.md 2.2: blocks of 64 tokens aligned to token 0; sw: a window of 64 keys
EPS = 1e-6     # LOLCATS.md 9: the self-recall error's phi(k)^T z + eps (LoLA's EPS)
CLAMP = 1e-12  # LOLCATS.md 2.1: Hedgehog's clamp


def hedgehog(x, W):
    """x (D), W (D, Fh) -> phi (2 Fh): softmax(x W) and softmax(-x W), clamped (LOLCATS.md 2.1)."""
    z = x @ W
    return torch.cat([torch.softmax(z, -1), torch.softmax(-z, -1)]).clamp(min=CLAMP)


def window_start(P, variant):
    """The first key of query P's softmax window (LOLCATS.md 2.2): terrace = blocks b(P)-1, b(P);
    sw = the last 64 keys."""
    w = (P // C - 1) * C if variant == "terrace" else P - C + 1
    return max(w, 0)


class Head:
    """One query head's three memories."""

    def __init__(self, F, D):
        self.S = torch.zeros(F, D)
        self.z = torch.zeros(F)
        self.cache = []  # (position, k, v, phi_k), in position order

    def recall_error(self, phi, v):
        """LOLCATS.md 9: e = || v - phi^T S / (phi^T z + eps) ||, against the state as it is."""
        return torch.linalg.norm(v - (phi @ self.S) / (phi @ self.z + EPS)).item()

    def leave(self, pairs, G, sinks):
        """A block of pairs leaves the window: the cache and the block, ranked by recall error
        (LoLAState.train_chunk: while they fit, all stay), keep the G worst recalled, fold the rest."""
        candidates = self.cache + pairs
        if len(candidates) <= G:
            self.cache = candidates
            return
        scores = [self.recall_error(c[3], c[2]) for c in candidates]  # every score before any fold
        def rank(i):  # sinks first, then the worst recalled, then the older
            pos = candidates[i][0]
            return (pos >= sinks, 0.0 if pos < sinks else -scores[i], pos)
        order = sorted(range(len(candidates)), key=rank)
        keep = set(order[:G])
        for i, (_, _, v, phi) in enumerate(candidates):
            if i not in keep:
                self.S += torch.outer(phi, v)
                self.z += phi
        self.cache = [c for i, c in enumerate(candidates) if i in keep]


def lola_decode(q, k, v, Wq, Wk, w, variant, G, sinks):
    """Every position in turn, as a decoder: the keys that leave the window go through the cache
    rule, then y_P = (g sum_{window + cache} exp(s - m) v + phi_q S) / (g sum exp(s - m) + phi_q . z)."""
    T, H, D = q.shape
    Hkv = k.shape[1]
    F = 2 * Wq.shape[2]
    heads = [Head(F, D) for _ in range(H)]
    left = 0  # keys 0 .. left-1 have left the window
    y = torch.zeros(T, H, D)
    for P in range(T):
        w0 = window_start(P, variant)
        for h in range(H):
            hk = h // (H // Hkv)
            block = [(j, k[j, hk], v[j, hk], hedgehog(k[j, hk], Wk[h])) for j in range(left, w0)]
            if block:
                heads[h].leave(block, G, sinks)
            st = heads[h]
            keys = [(j, k[j, hk], v[j, hk]) for j in range(w0, P + 1)] + [(c[0], c[1], c[2]) for c in st.cache]
            s = torch.stack([qk for qk in (q[P, h] @ kk / math.sqrt(D) for _, kk, _ in keys)])
            A = torch.sigmoid(w[h]) * torch.exp(s - s.max())
            Vs = torch.stack([vv for _, _, vv in keys])
            phq = hedgehog(q[P, h], Wq[h])
            y[P, h] = (A @ Vs + phq @ st.S) / (A.sum() + phq @ st.z)
        left = max(left, w0)
    cached = torch.full((H, G), -1.0)
    for h in range(H):
        for i, c in enumerate(heads[h].cache):
            cached[h, i] = c[0]
    return y, cached


def case(variant, T, G, H=4, Hkv=2, D=16, Fh=8, suffix="", ties=False, sinks=0):
    name = f"{variant}_T{T}_G{G}" + (f"_S{sinks}" if sinks else "") + suffix
    q = fx.randn(T, H, D)
    k = fx.randn(T, Hkv, D)
    v = fx.randn(T, Hkv, D)
    if ties:  # a pair repeated every 16 positions: equal recall errors, settled by position
        k[16::16] = k[0]
        v[16::16] = v[0]
    Wq = fx.randn(H, D, Fh, scale=0.5)
    Wk = fx.randn(H, D, Fh, scale=0.5)
    w = fx.randn(H)
    y, cached = lola_decode(q, k, v, Wq, Wk, w, variant, G, sinks)
    for n, t in (("q", q), ("k", k), ("v", v), ("Wq", Wq), ("Wk", Wk), ("w", w), ("y", y)):
        fx.put(f"{name}.{n}", t)
    if G > 0:
        fx.put(f"{name}.cached", cached)


for variant in ("terrace", "sw"):
    for T in (1, 17, 65, 130, 200):
        case(variant, T, 32)
    case(variant, 300, 5)     # a cache smaller than a block
    case(variant, 300, 100)   # larger than a block: the first blocks fill it
    case(variant, 260, 0)     # no cache: the paper's layer
    case(variant, 200, 200)   # every key kept: softmax attention
    case(variant, 300, 24, suffix="_ties", ties=True)
    case(variant, 300, 24, sinks=4)    # sinks within the cache
    case(variant, 200, 24, sinks=40)   # more sinks than the cache holds: its first 24 stay
fx.save(output_path())
