"""PyTorch side of `./bench linearize`: one stage-1 and one stage-2 LoLCATs training step on
transformers' LlamaForCausalLM with the SmolLM2-135M configuration (random weights: speed does not
depend on their values), batch 1, float32, the same T and thread count. A minimal transcription of
LOLCATS.md 2-4 written for timing, with the O(T^2) masks of the reference implementation:
  stage 1: per layer, teacher softmax y_true (no grad) and the hybrid y_pred from the same q, k, v;
           loss = 1000 * mean over layers of MSE; the layer passes o_proj(y_true) on; only the
           feature maps and window factors train; AdamW(lr 1e-2, wd 0) step.
  stage 2: feature maps frozen; LoRA r=8 alpha=16 on q, k, v, o; student forward, cross-entropy,
           backward, AdamW(lr 1e-4, wd 0) step over the LoRA parameters.
Prints one JSON line per stage."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from bench_common import parse_args, report, serve, smollm2_config, timed

args = parse_args()
C, FH = 64, 64  # block size, Hedgehog features per softmax (F = 2 FH)


def terrace_masks(T):
    """(T, T) window and linear masks: query i in block b sees blocks b-1 and b (causal) through
    the window, blocks <= b-2 through the linear part (LOLCATS.md 2.2)."""
    bi, bj = torch.arange(T)[:, None] // C, torch.arange(T)[None, :] // C
    causal = torch.arange(T)[None, :] <= torch.arange(T)[:, None]
    return causal & (bj >= bi - 1), bj <= bi - 2


class State:  # what the layers share: the mode, the masks, the stage-1 losses
    mode = "transfer"
    losses = []
    window, linear = terrace_masks(args.seq)


class LoraLinear(nn.Module):
    """base(x) + (alpha / r) (x A^T) B^T; A Kaiming-uniform, B zero (as peft)."""

    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base, self.scale = base, alpha / r
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + (x @ self.A.t()) @ self.B.t() * self.scale


class LolcatsAttention(nn.Module):
    """Replaces LlamaAttention: same projections and RoPE, hybrid attention (and, in stage 1, the
    softmax teacher beside it)."""

    def __init__(self, attn, cfg):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        self.H, self.D = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        self.G = self.H // cfg.num_key_value_heads
        eye = torch.eye(self.D)[:, :FH].expand(self.H, self.D, FH)  # identity init
        self.wq_fm = nn.Parameter(eye.clone())
        self.wk_fm = nn.Parameter(eye.clone())
        self.window_factors = nn.Parameter(torch.full((1, self.H, 1, 1), -2.1972245773))  # logit(0.1)

    @staticmethod
    def hedgehog(x, W):  # x (B, H, T, D), W (H, D, FH) -> (B, H, T, 2 FH)
        z = torch.einsum("bhtd,hdf->bhtf", x, W)
        return torch.cat([torch.softmax(z, -1), torch.softmax(-z, -1)], -1).clamp(min=1e-12)

    def hybrid(self, q, k, v):  # (B, H, T, D) each, k and v already repeated to H heads
        s = q @ k.transpose(-1, -2) / math.sqrt(self.D)
        s = s.masked_fill(~State.window, float("-inf"))
        a_sm = torch.sigmoid(self.window_factors) * torch.exp(s - s.amax(-1, keepdim=True))
        a_ln = (self.hedgehog(q, self.wq_fm) @ self.hedgehog(k, self.wk_fm).transpose(-1, -2)) * State.linear
        a = (a_sm + a_ln) / (a_sm.sum(-1, keepdim=True) + a_ln.sum(-1, keepdim=True))
        return a @ v

    def forward(self, hidden_states, position_embeddings=None, **kwargs):
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, -1, self.D).transpose(1, 2)
        k = self.k_proj(hidden_states).view(B, T, -1, self.D).transpose(1, 2)
        v = self.v_proj(hidden_states).view(B, T, -1, self.D).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        k, v = repeat_kv(k, self.G), repeat_kv(v, self.G)
        if State.mode == "transfer":
            with torch.no_grad():
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # teacher, y_true
            State.losses.append(F.mse_loss(self.hybrid(q, k, v), y))
        else:
            y = self.hybrid(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), None


cfg = smollm2_config()
model = LlamaForCausalLM(cfg).float()
model.requires_grad_(False)
attns = []
for layer in model.model.layers:
    layer.self_attn = LolcatsAttention(layer.self_attn, cfg)
    attns.append(layer.self_attn)
ids = torch.randint(0, cfg.vocab_size, (1, args.seq))
targets = torch.randint(0, cfg.vocab_size, (args.seq,))

# ---- stage 1: attention transfer ------------------------------------------------------------------
fm_params = [p for a in attns for p in (a.wq_fm, a.wk_fm, a.window_factors)]
opt1 = torch.optim.AdamW(fm_params, lr=1e-2, weight_decay=0.0)


def stage1():
    opt1.zero_grad(set_to_none=True)
    State.mode, State.losses = "transfer", []
    model.model(ids, use_cache=False)  # hidden states only: transfer needs no LM head
    loss = 1000 * torch.stack(State.losses).mean()
    loss.backward()
    opt1.step()


# ---- stage 2: LoRA --------------------------------------------------------------------------------
def setup_stage2():
    for p in fm_params:
        p.requires_grad_(False)
    lora = []
    for a in attns:
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            wrapped = LoraLinear(getattr(a, name))
            setattr(a, name, wrapped)
            lora += [wrapped.A, wrapped.B]
    State.mode = "student"
    return torch.optim.AdamW(lora, lr=1e-4, weight_decay=0.0)


def stage2():
    opt2.zero_grad(set_to_none=True)
    logits = model(ids, use_cache=False).logits.view(-1, cfg.vocab_size)
    F.cross_entropy(logits, targets).backward()
    opt2.step()


def start_stage2():  # --serve: stage 2 is set up when first asked for (after stage 1's calls)
    global opt2
    opt2 = setup_stage2()
    return stage2


if args.serve:
    serve({"stage1": stage1, "!stage2": start_stage2})
else:
    report("stage1", timed(stage1, args.reps), args.seq)
    opt2 = setup_stage2()
    report("stage2", timed(stage2, args.reps), args.seq)
