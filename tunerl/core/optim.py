"""Adam without `torch.optim`, over parameters kept in one flat tensor.

Building any `torch.optim` optimizer imports `torch._dynamo` on first use, which takes about
2 s here: a fifth of tunerl's whole CartPole budget. This is the same update (Kingma & Ba
2015, with torch's defaults and bias correction), with the `param_groups` / `state_dict`
surface the Learner uses. A Learner may still return any `torch.optim.Optimizer` from
`build_optimizer()`.

On a CPU an op on a small network costs per call, not per element, and torch's
`_foreach_*` ops loop over the tensors there. So the parameters are moved into one
contiguous tensor (`flatten_parameters`), each parameter a view of its slice, and their
gradients likewise: an Adam step, a gradient norm and a Polyak update are then a few ops in
all instead of a few per parameter (DQN's update with gradient clipping and its target
update: 0.85 against 0.99 ms per update, README).

The step itself is torch's fused Adam kernel (`torch._fused_adam_`, the one behind
`torch.optim.Adam(fused=True)`, an aten op that does not import dynamo) where torch has it for
the device: one pass over the parameters and moments instead of the seven of the
foreach formulation below it, which torch before 2.4 uses on the CPU (SAC at 256x256 on
Hopper-v5: 0.2 ms against 0.6 ms per update for the critics' step, issue 17).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

# torch's fused Adam runs on the CPU from torch 2.4 on, on CUDA before that.
_FUSED_ADAM_CPU = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4)


def has_fused_adam(device: torch.device) -> bool:
    """Whether `torch._fused_adam_` runs on `device` with this torch."""
    return device.type == "cuda" or (device.type == "cpu" and _FUSED_ADAM_CPU)


def flatten_parameters(params: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """Makes `params` consecutive views of one contiguous tensor, in order, and returns that
    tensor (the one they already share, if they do). Values are kept; a module holding the
    parameters sees no difference. None, and nothing changed, when they differ in dtype or
    device, are not dense, or some already share storage otherwise (another flat tensor's
    parameters are not taken from it)."""
    params = list(params)
    if not params:
        return None
    first = params[0]
    if any(
        p.dtype != first.dtype or p.device != first.device or p.layout != torch.strided
        for p in params
    ):
        return None
    flat = shared_flat_tensor(params)
    if flat is not None:
        return flat
    if any(p.untyped_storage().nbytes() != p.numel() * p.element_size() for p in params):
        return None
    flat = torch.empty(sum(p.numel() for p in params), dtype=first.dtype, device=first.device)
    for p, view in zip(params, _views(flat, params)):
        view.copy_(p.detach())
        p.data = view
    return flat


def shared_flat_tensor(params: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The contiguous tensor `params` are consecutive views of, all of it and in order; None
    if they are not."""
    storage = params[0].untyped_storage()
    offset = 0
    for p in params:
        if (
            p.untyped_storage().data_ptr() != storage.data_ptr()
            or p.storage_offset() != offset
            or not p.is_contiguous()
        ):
            return None
        offset += p.numel()
    if offset * params[0].element_size() != storage.nbytes():
        return None
    return torch.empty(0, dtype=params[0].dtype, device=params[0].device).set_(
        storage, 0, (offset,)
    )


def _views(flat: torch.Tensor, shapes_of: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    views, offset = [], 0
    for p in shapes_of:
        views.append(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return views


class FlatParameters:
    """Parameters that live in one flat tensor (`flatten_parameters`), for ops over all of
    them at once. `intact()` tells whether they still do: moving the module to another
    device, or assigning a parameter's `.data`, gives it storage of its own."""

    def __init__(self, params: Iterable[torch.Tensor]):
        self.params = list(params)
        self.flat = flatten_parameters(self.params)
        self._addresses = [p.data_ptr() for p in self.params] if self.flat is not None else None

    def intact(self) -> bool:
        return self._addresses is not None and self._addresses == [
            p.data_ptr() for p in self.params
        ]


@torch.no_grad()
def polyak_update_(target: FlatParameters, online: FlatParameters, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target; tau >= 1 copies."""
    if target.intact() and online.intact():
        if tau >= 1.0:
            target.flat.copy_(online.flat)
        else:
            target.flat.lerp_(online.flat, tau)
    elif tau >= 1.0:
        torch._foreach_copy_(target.params, online.params)
    else:
        torch._foreach_lerp_(target.params, online.params, tau)


class Adam:
    """Adam over `params`, which it moves into one flat tensor (when they share dtype and
    device). Their gradients are views of one flat gradient tensor too, which autograd
    accumulates into: `zero_grad()` zeroes it whatever `set_to_none` says, so a parameter no
    loss reached gets a zero-gradient step (torch's Adam with `set_to_none=False`)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr, "betas": tuple(betas), "eps": eps}]
        self.step_count = 0
        self._flat_params = FlatParameters(self.params)
        self.flat = self._flat_params.flat
        if self.flat is None:
            self.flat_grad = None
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
            return
        self.flat_grad = torch.zeros_like(self.flat)
        self._grad_views = _views(self.flat_grad, self.params)
        self._flat_exp_avg = torch.zeros_like(self.flat)
        self._flat_exp_avg_sq = torch.zeros_like(self.flat)
        # Per-parameter views, for the state_dict (the same format either way).
        self.exp_avg = _views(self._flat_exp_avg, self.params)
        self.exp_avg_sq = _views(self._flat_exp_avg_sq, self.params)
        for p, view in zip(self.params, self._grad_views):
            p.grad = view

    def flat_gradient(self) -> torch.Tensor | None:
        """All parameters' gradients as one tensor; a gradient autograd wrote elsewhere (its
        parameter's `.grad` was set to None or replaced) is copied in first. None when the
        parameters are not flat."""
        if self.flat_grad is not None and not self._flat_params.intact():
            # A parameter was given storage of its own: step them one by one from now on.
            self.flat_grad = None
        if self.flat_grad is None:
            return None
        for p, view in zip(self.params, self._grad_views):
            grad = p.grad
            if grad is not view:
                if grad is None:
                    view.zero_()
                else:
                    view.copy_(grad)
                p.grad = view
        return self.flat_grad

    def zero_grad(self, set_to_none: bool = True) -> None:
        flat_grad = self.flat_gradient()
        if flat_grad is not None:
            flat_grad.zero_()
            return
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        flat_grad = self.flat_gradient()
        if flat_grad is not None:
            params, grads = [self.flat], [flat_grad]
            exp_avg, exp_avg_sq = [self._flat_exp_avg], [self._flat_exp_avg_sq]
        else:
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
        if has_fused_adam(params[0].device):
            # The kernel reads the step count from a tensor (one per parameter; the same one
            # serves all, since the kernel does not increment it).
            step = torch.tensor(float(self.step_count), device=params[0].device)
            torch._fused_adam_(
                params,
                grads,
                exp_avg,
                exp_avg_sq,
                [],
                [step] * len(params),
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=eps,
                amsgrad=False,
                maximize=False,
            )
            return
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


def clip_grad_norm_(
    optimizer: object, parameters: Sequence[torch.Tensor], max_norm: float
) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_(parameters, max_norm)`: the global gradient norm
    (before clipping), with the gradients scaled down to `max_norm` if above it. A few ops
    in all when `optimizer` is an `Adam` holding exactly these parameters in one flat
    tensor."""
    flat_grad = None
    if isinstance(optimizer, Adam) and len(parameters) == len(optimizer.params):
        if all(a is b for a, b in zip(parameters, optimizer.params)):
            flat_grad = optimizer.flat_gradient()
    if flat_grad is None:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    norm = torch.linalg.vector_norm(flat_grad)
    if not math.isinf(max_norm):
        # torch's rule: scale by max_norm / (norm + 1e-6), never up.
        flat_grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm
