"""tunerl's own Adam against torch.optim.Adam (the reference it claims to equal)."""

from __future__ import annotations

import pytest
import torch

from tunerl.core.optim import (
    Adam,
    FlatParameters,
    clip_grad_norm_,
    flatten_parameters,
    polyak_update_,
)


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


def run_beside_torch_adam(steps: int, prepare) -> None:
    """tunerl's Adam and torch's on equal parameters and losses, with `prepare(step,
    optimizer, params)` before each backward (it zeroes the gradients its own way); both
    must end with the same parameters."""
    ours, theirs = make_params(), make_params()
    optimizers = [Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)]
    for step in range(steps):
        for optimizer, params in zip(optimizers, (ours, theirs)):
            prepare(step, optimizer, params)
            loss_of(params, step).backward()
            optimizer.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lr_is_read_from_param_groups_at_every_step():
    def prepare(step, optimizer, params):
        optimizer.param_groups[0]["lr"] = 1e-2 / (step + 1)
        optimizer.zero_grad()

    run_beside_torch_adam(10, prepare)


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


# ------------------------------------------------------- parameters in one flat tensor
def test_adam_keeps_its_parameters_and_their_gradients_in_one_flat_tensor():
    params = make_params()
    optimizer = Adam(params, lr=1e-2)
    flat = optimizer.flat
    assert flat is not None and flat.numel() == 5 * 3 + 3
    assert params[0].data_ptr() == flat.data_ptr()
    assert params[1].data_ptr() == flat[15:].data_ptr()
    optimizer.zero_grad()
    loss_of(params, 0).backward()
    # autograd accumulated into the flat gradient's views
    torch.testing.assert_close(optimizer.flat_grad[15:], params[1].grad)


def test_adam_matches_torch_adam_when_gradients_are_reset_behind_its_back():
    # A learner that calls module.zero_grad() (set_to_none) instead of the optimizer's: the
    # gradients autograd then writes elsewhere are copied into the flat tensor.
    def prepare(step, optimizer, params):
        for p in params:
            p.grad = None

    run_beside_torch_adam(10, prepare)


def test_adam_goes_on_parameter_by_parameter_once_one_leaves_the_flat_tensor():
    def prepare(step, optimizer, params):
        if step == 4 and isinstance(optimizer, Adam):
            # e.g. a load that assigns .data instead of copying into it
            params[0].data = params[0].data.clone()
        optimizer.zero_grad()

    run_beside_torch_adam(10, prepare)


def test_parameters_of_mixed_dtypes_are_stepped_one_by_one():
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2).double())]
    optimizer = Adam(params, lr=0.1)
    assert optimizer.flat is None
    (params[0].sum() + 2 * params[1].sum()).backward()
    optimizer.step()
    torch.testing.assert_close(params[0], torch.full((3,), 0.9))
    torch.testing.assert_close(params[1], torch.full((2,), 0.9, dtype=torch.float64))


def test_flatten_parameters_keeps_the_module_and_leaves_other_flat_tensors_alone():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    before = net(x).detach()
    flat = flatten_parameters(list(net.parameters()))
    torch.testing.assert_close(net(x), before)
    assert flat.numel() == sum(p.numel() for p in net.parameters())
    assert flatten_parameters(list(net.parameters())).data_ptr() == flat.data_ptr()
    # A subset of another flat tensor's parameters is not moved out of it.
    assert flatten_parameters(list(net[2].parameters())) is None
    assert net[2].weight.untyped_storage().data_ptr() == flat.data_ptr()


@pytest.mark.parametrize("max_norm", [0.5, 1e6, float("inf")])
def test_clip_grad_norm_equals_torch_on_the_flat_gradient(max_norm):
    ours, theirs = make_params(), make_params()
    optimizer = Adam(ours)
    for params in (ours, theirs):
        loss_of(params, 0).backward()
    norm = clip_grad_norm_(optimizer, ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    torch.testing.assert_close(norm, expected)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad)
    if max_norm == 0.5:
        assert torch.linalg.vector_norm(optimizer.flat_grad) == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("tau", [0.1, 1.0])
@pytest.mark.parametrize("flat", [True, False])
def test_polyak_update(tau, flat):
    online = FlatParameters(make_params(0))
    target = FlatParameters(make_params(1))
    if not flat:
        target.params[1].data = target.params[1].data.clone()
    assert target.intact() == flat
    expected = [tau * o + (1 - tau) * t for o, t in zip(online.params, target.params)]
    polyak_update_(target, online, tau)
    for t, e in zip(target.params, expected):
        torch.testing.assert_close(t.detach(), e.detach())


def test_flat_parameters_notice_any_parameter_that_leaves():
    params = [torch.nn.Parameter(torch.ones(n)) for n in (3, 2, 4)]
    flat = FlatParameters(params)
    assert flat.intact()
    params[1].data = params[1].data.clone()  # the middle one
    assert not flat.intact()
