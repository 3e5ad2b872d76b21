"""
Muon: momentum SGD whose update for each weight matrix is orthogonalized (Keller Jordan, 2024), the optimizer
nanochat (card 004) uses for the matrices inside the blocks; train.configure_optimizer pairs it with AdamW
for everything else (`--muon_lr` > 0).
"""

import torch


def orthogonalize(G, steps=5):
    """The nearest semi-orthogonal matrix to G, approximately: a quintic Newton-Schulz iteration whose
    coefficients (3.4445, -4.7750, 2.0315) were tuned for speed over exactness (Muon, 2024)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = G.size(0) > G.size(1)
    X = G.bfloat16().T if tall else G.bfloat16()
    X = X / (X.norm() + 1e-7)  # singular values into [0, 1], where the iteration converges
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Every direction of a weight matrix moves by the same amount, however skewed the raw gradient is.

    row_blocks maps id(parameter) to the row sizes of the matrices fused in it (attention's [q | k | v]); each
    block is orthogonalized on its own, as if q, k and v were separate weights."""

    def __init__(self, params, lr=0.02, momentum=0.95, lr_scale=1.0, row_blocks=None):
        super().__init__(params, {"lr": lr, "momentum": momentum, "lr_scale": lr_scale})
        self.row_blocks = row_blocks or {}

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                rows = self.row_blocks.get(id(p), p.size(0))
                update = p.grad.lerp(buf, group["momentum"])  # Nesterov
                for w, g in zip(p.split(rows), update.split(rows)):
                    w.add_(orthogonalize(g), alpha=-group["lr"] * max(1.0, g.size(0) / g.size(1)) ** 0.5)


class Optimizers:
    """Two optimizers stepped as one, so the loop, the GradScaler and checkpoints see one object."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers
        self.state = {}  # GradScaler keys its bookkeeping by id(optimizer), never reads this

    @property
    def param_groups(self):  # read anew: load_state_dict replaces each optimizer's group dicts, and the loop sets lr
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none=True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, sd):
        for o, s in zip(self.optimizers, sd["optimizers"]):
            o.load_state_dict(s)
