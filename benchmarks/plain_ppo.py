"""Plain PPO on CartPole-v1: numpy + torch in one loop, no framework (CleanRL-style).

The benchmark's reference: tunerl's PPO settings (under tunerl's names, so the benchmark
can hand it the experiment's config) with no framework around them. The networks are tunerl's
default too: separate 64x64 tanh policy and value MLPs, orthogonal init. Gymnasium's natively
vectorized CartPole resets a finished sub-env on the next step, which ignores the action:
those rows are not transitions and are left out of the batch.
"""

from __future__ import annotations

import argparse
from collections import deque

import gymnasium as gym
import numpy as np
import torch
from torch import nn

DEFAULTS = {  # tunerl's PPO defaults
    "lr": 3e-4,
    "gamma": 0.99,
    "lambda_": 0.95,
    "num_envs_per_env_runner": 8,
    "train_batch_size_per_learner": 2000,
    "minibatch_size": 250,
    "num_epochs": 10,
    "clip_param": 0.2,
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.0,
    "grad_clip": 0.5,
}


def mlp(out_size: int, out_gain: float) -> nn.Sequential:
    layers = [nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out_size)]
    for layer, gain in zip(layers[::2], (2**0.5, 2**0.5, out_gain)):
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def train(seed: int, target_return: float, max_steps: int, **settings: float) -> dict:
    """Trains until the mean return of the last 100 episodes reaches `target_return` (checked
    after each update) or `max_steps` env steps were sampled."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"plain PPO has no settings {sorted(unknown)}; it has {list(DEFAULTS)}.")
    h = {**DEFAULTS, **settings}
    num_envs, gamma, clip = h["num_envs_per_env_runner"], h["gamma"], h["clip_param"]
    torch.manual_seed(seed)
    envs = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="vector_entry_point")
    actor, critic = mlp(2, 0.01), mlp(1, 1.0)
    params = [*actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(params, lr=h["lr"])
    obs, _ = envs.reset(seed=seed)
    done = np.zeros(num_envs, dtype=bool)
    episode_return, recent_returns = np.zeros(num_envs), deque(maxlen=100)
    steps, mean_return = 0, float("nan")
    while steps < max_steps:
        # ROLLOUT: one row per vector step; a sub-env's row right after its `done` is a reset.
        rows = {k: [] for k in ("obs", "action", "logp", "value", "reward", "term", "done")}
        rows["valid"], collected = [], 0
        while collected < h["train_batch_size_per_learner"]:
            with torch.no_grad():
                obs_t = torch.as_tensor(obs)
                dist = torch.distributions.Categorical(logits=actor(obs_t))
                action = dist.sample()
                rows["logp"].append(dist.log_prob(action))
                rows["value"].append(critic(obs_t).squeeze(-1))
            rows["obs"].append(obs_t)
            rows["action"].append(action)
            rows["valid"].append(~done)
            collected += int((~done).sum())
            obs, reward, term, trunc, _ = envs.step(action.numpy())
            done = term | trunc
            episode_return += reward
            recent_returns.extend(episode_return[done])
            episode_return[done] = 0.0
            for key, value in (("reward", reward), ("term", term), ("done", done)):
                rows[key].append(torch.as_tensor(value))
        steps += collected
        # ADVANTAGES (GAE). The row after a done one holds V(final obs): a truncated episode
        # bootstraps from it, a terminated one does not, and neither looks past its end.
        with torch.no_grad():
            values = torch.stack([*rows["value"], critic(torch.as_tensor(obs)).squeeze(-1)])
        reward, term, ends = (torch.stack(rows[k]) for k in ("reward", "term", "done"))
        advantages, last = torch.zeros_like(reward), torch.zeros(num_envs)
        for t in reversed(range(len(reward))):
            delta = reward[t] + gamma * values[t + 1] * ~term[t] - values[t]
            last = advantages[t] = delta + gamma * h["lambda_"] * ~ends[t] * last
        valid = torch.as_tensor(np.stack(rows["valid"])).flatten()
        batch = {k: torch.stack(rows[k]).flatten(0, 1)[valid] for k in ("obs", "action", "logp")}
        batch["advantage"] = advantages.flatten()[valid]
        batch["return"] = batch["advantage"] + values[:-1].flatten()[valid]
        # UPDATE: clipped surrogate + value loss - entropy bonus, minibatch SGD.
        for _ in range(h["num_epochs"]):
            for idx in torch.randperm(len(batch["action"])).split(h["minibatch_size"]):
                mb = {k: v[idx] for k, v in batch.items()}
                adv = (mb["advantage"] - mb["advantage"].mean()) / (mb["advantage"].std() + 1e-8)
                dist = torch.distributions.Categorical(logits=actor(mb["obs"]))
                ratio = (dist.log_prob(mb["action"]) - mb["logp"]).exp()
                policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
                value_loss = (critic(mb["obs"]).squeeze(-1) - mb["return"]).pow(2).mean()
                loss = policy_loss + h["vf_loss_coeff"] * value_loss
                optimizer.zero_grad()
                (loss - h["entropy_coeff"] * dist.entropy().mean()).backward()
                if h["grad_clip"] is not None:
                    nn.utils.clip_grad_norm_(params, h["grad_clip"])
                optimizer.step()
        mean_return = float(np.mean(recent_returns)) if recent_returns else float("nan")
        if mean_return >= target_return:
            return {"reached": True, "env_steps": steps, "return_mean": mean_return}
    return {"reached": False, "env_steps": steps, "return_mean": mean_return}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=float, default=450.0)
    parser.add_argument("--max-steps", type=int, default=300_000)
    args = parser.parse_args()
    print(train(args.seed, args.target, args.max_steps))
