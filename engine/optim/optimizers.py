"""The seed's optimizer choices over the latent, by name; DiffGrad is written out here (docs/engine.md, "Optimizers")."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from engine.config import OPTIMIZERS, canonical_choice


class DiffGrad(torch.optim.Optimizer):
    """diffGrad (Dubey et al. 2019): an Adam step whose momentum is scaled by sigmoid(|g_prev − g|)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One diffGrad update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["previous_grad"] = torch.zeros_like(p)
                state["step"] += 1
                step = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                friction = torch.sigmoid((state["previous_grad"] - grad).abs())
                state["previous_grad"].copy_(grad)
                step_size = group["lr"] * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
                p.addcdiv_(exp_avg * friction, denom, value=-step_size)
        return loss


def make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """An optimizer over `params` by the seed's name."""
    name = canonical_choice(name, OPTIMIZERS, "optimizer")
    if name == "DiffGrad":
        return DiffGrad(params, lr=lr, eps=1e-9, weight_decay=1e-9)  # the seed's torch_optimizer settings
    make: Callable[..., torch.optim.Optimizer] = getattr(torch.optim, name)
    return make(params, lr=lr)
