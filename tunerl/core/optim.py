"""Adam without `torch.optim`.

Building any `torch.optim` optimizer imports `torch._dynamo` on first use, which takes about
2 s here: a fifth of tunerl's whole CartPole budget. This is the same update (Kingma & Ba
2015, with torch's defaults and bias correction), in `torch._foreach_*` ops, with the
`param_groups` / `state_dict` surface the Learner uses. A Learner may still return any
`torch.optim.Optimizer` from `build_optimizer()`.
"""

from __future__ import annotations

import torch


class Adam:
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr, "betas": tuple(betas), "eps": eps}]
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        params, grads, exp_avg, exp_avg_sq = [], [], [], []
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
                exp_avg.append(m)
                exp_avg_sq.append(v)
        if not params:
            return
        self.step_count += 1
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1 - beta2)
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2 = 1 - beta2**self.step_count
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, bias_correction2**0.5)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, -lr / bias_correction1)

    def state_dict(self) -> dict:
        return {
            "step": torch.tensor(self.step_count),
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
            "lr": torch.tensor(self.param_groups[0]["lr"], dtype=torch.float64),
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(
                f"Optimizer state has {len(state['exp_avg'])} tensors for {len(self.params)} "
                "parameters: the checkpoint belongs to another module."
            )
        self.step_count = int(state["step"])
        for target, source in zip(
            self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]
        ):
            target.copy_(source)
        self.param_groups[0]["lr"] = float(state["lr"])
