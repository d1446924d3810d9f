"""PyTorch side of `./bench llama`: LlamaForCausalLM with the SmolLM2-135M configuration (random
weights: speed does not depend on their values), batch 1, float32, the same T and thread count.
Prints one JSON line per measurement."""
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from bench_common import parse_args, report, serve, smollm2_config, timed

args = parse_args()
cfg = smollm2_config()
model = LlamaForCausalLM(cfg).float()
ids = torch.randint(0, cfg.vocab_size, (1, args.seq))
targets = torch.randint(0, cfg.vocab_size, (args.seq,))


def fwd():
    with torch.no_grad():
        model(ids)


def fwd_bwd():
    model.zero_grad(set_to_none=True)
    logits = model(ids).logits.view(-1, cfg.vocab_size)
    F.cross_entropy(logits, targets).backward()


if args.serve:
    serve({"forward": fwd, "forward_backward": fwd_bwd})
else:
    for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        report(name, timed(fn, args.reps), args.seq, attn=model.config._attn_implementation)
