"""Action distributions against torch.distributions (the reference)."""

from __future__ import annotations

import numpy as np
import torch
from torch import distributions as td

from tunerl.core.distributions import (
    Bernoulli,
    Categorical,
    DiagGaussian,
    MultiCategorical,
    TanhGaussian,
    sample_with_logp,
)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_categorical_logp_entropy_kl_match_torch():
    logits = torch.randn(6, 4, generator=generator(0)) * 3
    other_logits = torch.randn(6, 4, generator=generator(1))
    actions = torch.tensor([0, 1, 2, 3, 0, 1])
    ours, other = Categorical(logits), Categorical(other_logits)
    ref, ref_other = td.Categorical(logits=logits), td.Categorical(logits=other_logits)

    torch.testing.assert_close(ours.logp(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    torch.testing.assert_close(ours.kl(other), td.kl_divergence(ref, ref_other))
    assert ours.deterministic_sample().tolist() == logits.argmax(-1).tolist()


def test_categorical_samples_follow_the_probabilities():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = probs.log().expand(20_000, 4) + 5.0  # unnormalized logits
    samples = Categorical(logits).sample(generator(2))
    frequencies = np.bincount(samples.numpy(), minlength=4) / len(samples)
    # Four binomial standard deviations at n = 20000 are below 0.014.
    np.testing.assert_allclose(frequencies, probs.numpy(), atol=0.014)


def test_categorical_sampling_repeats_with_the_same_generator():
    logits = torch.zeros(100, 3)
    first = Categorical(logits).sample(generator(3))
    second = Categorical(logits).sample(generator(3))
    assert torch.equal(first, second)
    assert set(first.tolist()) == {0, 1, 2}


def test_diag_gaussian_logp_entropy_kl_match_torch():
    inputs = torch.randn(5, 4, generator=generator(4))  # 2 means, 2 log-stds
    other_inputs = torch.randn(5, 4, generator=generator(5))
    actions = torch.randn(5, 2, generator=generator(6))
    ours, other = DiagGaussian(inputs), DiagGaussian(other_inputs)

    def reference(x):
        mean, log_std = x.chunk(2, dim=-1)
        return td.Independent(td.Normal(mean, log_std.exp()), 1)

    ref, ref_other = reference(inputs), reference(other_inputs)
    torch.testing.assert_close(ours.logp(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    torch.testing.assert_close(ours.kl(other), td.kl_divergence(ref, ref_other))
    torch.testing.assert_close(ours.deterministic_sample(), inputs[:, :2])


def test_diag_gaussian_samples_have_the_given_mean_and_std():
    inputs = torch.tensor([[1.0, -2.0, np.log(0.5), np.log(2.0)]]).expand(20_000, 4)
    samples = DiagGaussian(inputs).sample(generator(7)).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(samples.std(axis=0), [0.5, 2.0], rtol=0.03)


def test_sample_with_logp_uses_the_distribution_s_own_pass_or_sample_then_logp():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]] * 50))
    actions, logp = sample_with_logp(Categorical(logits), generator(3))
    # No sample_with_logp on Categorical: the same draws as sample(), rated by logp().
    torch.testing.assert_close(actions, Categorical(logits).sample(generator(3)))
    torch.testing.assert_close(logp, Categorical(logits).logp(actions))

    inputs = torch.tensor([[0.3, -0.4, -0.5, 0.2]] * 50, dtype=torch.float64)
    actions, logp = sample_with_logp(TanhGaussian(inputs), generator(4))
    expected_actions, expected_logp = TanhGaussian(inputs).rsample_with_logp(generator(4))
    torch.testing.assert_close(actions, expected_actions)
    torch.testing.assert_close(logp, expected_logp)
    torch.testing.assert_close(logp, TanhGaussian(inputs).logp(actions))


# ------------------------------------------------------- MultiDiscrete and MultiBinary
SIZES = (3, 2, 4)


def multi_categorical_reference(logits: torch.Tensor) -> list[td.Categorical]:
    return [td.Categorical(logits=part) for part in logits.split(SIZES, dim=-1)]


def test_multi_categorical_logp_entropy_kl_match_a_product_of_torch_categoricals():
    logits = torch.randn(6, sum(SIZES), generator=generator(10)) * 2
    other_logits = torch.randn(6, sum(SIZES), generator=generator(11))
    actions = torch.stack(
        [torch.randint(size, (6,), generator=generator(12 + i)) for i, size in enumerate(SIZES)],
        dim=-1,
    )
    ours, other = MultiCategorical(logits, SIZES), MultiCategorical(other_logits, SIZES)
    ref, ref_other = multi_categorical_reference(logits), multi_categorical_reference(other_logits)

    ref_logp = sum(part.log_prob(actions[:, i]) for i, part in enumerate(ref))
    torch.testing.assert_close(ours.logp(actions), ref_logp)
    torch.testing.assert_close(ours.entropy(), sum(part.entropy() for part in ref))
    ref_kl = sum(td.kl_divergence(mine, theirs) for mine, theirs in zip(ref, ref_other))
    torch.testing.assert_close(ours.kl(other), ref_kl)
    greedy = torch.stack([part.logits.argmax(-1) for part in ref], dim=-1)
    assert torch.equal(ours.deterministic_sample(), greedy)


def test_multi_categorical_samples_each_component_with_its_probabilities():
    probs = [torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.9, 0.1])]
    logits = torch.cat([p.log() for p in probs]).expand(20_000, 5)
    samples = MultiCategorical(logits, (3, 2)).sample(generator(20))
    assert samples.shape == (20_000, 2) and samples.dtype == torch.long
    for i, p in enumerate(probs):
        frequencies = np.bincount(samples[:, i].numpy(), minlength=len(p)) / len(samples)
        np.testing.assert_allclose(frequencies, p.numpy(), atol=0.014)
    again = MultiCategorical(logits, (3, 2)).sample(generator(20))
    assert torch.equal(samples, again)


def test_bernoulli_logp_entropy_kl_match_independent_torch_bernoullis():
    logits = torch.randn(6, 5, generator=generator(30)) * 4
    other_logits = torch.randn(6, 5, generator=generator(31))
    actions = torch.randint(2, (6, 5), generator=generator(32)).float()
    ours, other = Bernoulli(logits), Bernoulli(other_logits)
    ref = td.Independent(td.Bernoulli(logits=logits), 1)
    ref_other = td.Independent(td.Bernoulli(logits=other_logits), 1)

    torch.testing.assert_close(ours.logp(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    torch.testing.assert_close(ours.kl(other), td.kl_divergence(ref, ref_other))
    assert torch.equal(ours.deterministic_sample(), (logits > 0).float())


def test_bernoulli_stays_finite_for_extreme_logits():
    logits = torch.tensor([[-60.0, 60.0, 0.0]])
    dist = Bernoulli(logits)
    assert torch.isfinite(dist.logp(torch.tensor([[1.0, 0.0, 1.0]]))).all()
    assert torch.isfinite(dist.entropy()).all()
    assert torch.isfinite(dist.kl(Bernoulli(-logits))).all()


def test_bernoulli_samples_follow_the_probabilities():
    probs = torch.tensor([0.1, 0.5, 0.8])
    logits = torch.log(probs / (1 - probs)).expand(20_000, 3)
    samples = Bernoulli(logits).sample(generator(40))
    assert set(samples.unique().tolist()) == {0.0, 1.0}
    np.testing.assert_allclose(samples.mean(0).numpy(), probs.numpy(), atol=0.014)
    assert torch.equal(samples, Bernoulli(logits).sample(generator(40)))
