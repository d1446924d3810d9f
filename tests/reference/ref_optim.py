"""Reference trajectories for the optimiser and learning-rate schedules (nn/adamw.h,
nn/lr_schedule.h), from torch.optim and transformers' schedule functions."""
import math

import torch
from transformers import get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

from common import Fixture, output_path

fx = Fixture(seed=99)

# ---- AdamW: 10 steps on float32 parameters with given gradients -------------------------------------
n, steps = 257, 10
for name, lr, wd in (("adamw", 1e-2, 0.1), ("adamw_nowd", 1e-3, 0.0)):
    p0 = torch.randn(n, generator=fx.gen, dtype=torch.float32)
    p = p0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd,
                            foreach=False)
    grads, traj = [], []
    for t in range(steps):
        g = torch.randn(n, generator=fx.gen, dtype=torch.float32) * (0.1 if t % 2 else 3.0)
        p.grad = g.clone()
        opt.step()
        grads.append(g)
        traj.append(p.detach().clone())
    fx.put(name + ".p0", p0.double())
    fx.put(name + ".grads", torch.stack(grads).double())
    fx.put(name + ".params", torch.stack(traj).double())  # after each step
    fx.put(name + ".hparams", torch.tensor([lr, wd], dtype=torch.float64))


def lrs_of(make_sched, base, total):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = make_sched(opt)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return torch.tensor(out, dtype=torch.float64)


# ---- cosine with warmup (transformers), the lr at steps 0..total+4 -----------------------------------
base, warmup, total = 3e-4, 10, 50
fx.put("cosine.lrs", lrs_of(lambda o: get_cosine_schedule_with_warmup(o, warmup, total), base, total + 5))
fx.put("cosine_min.lrs", lrs_of(
    lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, warmup, total, min_lr_rate=0.1), base, total + 5))
fx.put("cosine.hparams", torch.tensor([base, warmup, total, 0.1], dtype=torch.float64))

# ---- ReduceLROnPlateau (torch.optim.lr_scheduler), lr after each evaluation ---------------------------
metrics = [2.0, 1.5, 1.2, 1.19, 1.195, 1.2, 1.18, 1.25, 1.3, 1.1, 1.1, 1.1, 1.1, 1.1, 1.0999,
           1.05, 1.06, 1.07, 1.08, 1.09, 1.1, 1.11, 1.12, 1.13, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99,
           float("nan"), 1.0, 1.0, 1.0, 1.0]
for name, kw in (("plateau", dict(factor=0.5, patience=2, min_lr=1e-3, threshold=1e-2, cooldown=1)),
                 ("plateau_lolcats", dict(factor=0.1, patience=3, min_lr=1e-5, threshold=1e-4, cooldown=0))):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", **kw)
    lrs = []
    for m in metrics:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    fx.put(name + ".metrics", torch.tensor(metrics, dtype=torch.float64))
    fx.put(name + ".lrs", torch.tensor(lrs, dtype=torch.float64))
    fx.put(name + ".hparams", torch.tensor([kw["factor"], kw["patience"], kw["min_lr"], kw["threshold"],
                                            kw["cooldown"]], dtype=torch.float64))

fx.save(output_path())
