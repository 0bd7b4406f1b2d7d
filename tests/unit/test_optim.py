"""tunerl's own Adam against torch.optim.Adam (the reference it claims to equal)."""

from __future__ import annotations

import torch

from tunerl.core.optim import Adam


def make_params(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(5, 3, generator=generator)),
        torch.nn.Parameter(torch.randn(3, generator=generator)),
    ]


def loss_of(params: list[torch.nn.Parameter], step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 5, generator=generator)
    return ((x @ params[0] + params[1]).tanh() ** 2).sum()


def run(optimizer_class, params, steps: int, lr: float = 1e-2, start: int = 0):
    optimizer = optimizer_class(params, lr=lr)
    for step in range(start, start + steps):
        optimizer.zero_grad()
        loss_of(params, step).backward()
        optimizer.step()
    return optimizer


def test_adam_matches_torch_adam():
    ours, theirs = make_params(), make_params()
    run(Adam, ours, steps=25)
    run(torch.optim.Adam, theirs, steps=25)
    for a, b, initial in zip(ours, theirs, make_params()):
        assert not torch.equal(a, initial)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lr_is_read_from_param_groups_at_every_step():
    ours, theirs = make_params(), make_params()
    optimizers = [Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)]
    for step in range(10):
        for optimizer, params in zip(optimizers, (ours, theirs)):
            optimizer.param_groups[0]["lr"] = 1e-2 / (step + 1)
            optimizer.zero_grad()
            loss_of(params, step).backward()
            optimizer.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_continues_identically():
    params = make_params()
    optimizer = run(Adam, params, steps=5)
    state = optimizer.state_dict()
    copy = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restored = Adam(copy, lr=123.0)
    restored.load_state_dict(state)
    assert restored.param_groups[0]["lr"] == 1e-2

    for step in range(5, 10):
        for opt, ps in ((optimizer, params), (restored, copy)):
            opt.zero_grad()
            loss_of(ps, step).backward()
            opt.step()
    for a, b in zip(params, copy):
        assert torch.equal(a, b)


def test_state_dict_is_a_copy():
    params = make_params()
    optimizer = run(Adam, params, steps=2)
    state = optimizer.state_dict()
    saved = [t.clone() for t in state["exp_avg"]]
    optimizer.zero_grad()
    loss_of(params, 99).backward()
    optimizer.step()
    assert not torch.equal(optimizer.exp_avg[0], saved[0])
    for in_state, before in zip(state["exp_avg"], saved):
        assert torch.equal(in_state, before)
