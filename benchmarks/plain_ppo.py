"""Plain PPO on CartPole-v1: numpy + torch in one loop, no framework (CleanRL-style).

The benchmark's floor: what PPO costs with nothing around it. Its hyperparameters are
rl-baselines3-zoo's tuned CartPole-v1 PPO (the SB3 peer's), so plain vs sb3 compares code
at equal settings. Gymnasium's natively vectorized CartPole resets a finished sub-env on the
next step, which ignores the action: those rows are masked out of the loss.
"""

from __future__ import annotations

import argparse
from collections import deque

import gymnasium as gym
import numpy as np
import torch
from torch import nn

NUM_ENVS, NUM_STEPS, NUM_EPOCHS, MINIBATCH_SIZE = 8, 32, 20, 256
GAMMA, GAE_LAMBDA, LR, CLIP, VF_COEF, MAX_GRAD_NORM = 0.98, 0.8, 1e-3, 0.2, 0.5, 0.5
SCHEDULE_STEPS = 100_000  # lr and clip decay linearly to 0 over the zoo's n_timesteps


def mlp(out_size: int, out_gain: float) -> nn.Sequential:
    """64x64 tanh with orthogonal init (SB3's and CleanRL's)."""
    layers = [nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out_size)]
    for layer, gain in zip(layers[::2], (2**0.5, 2**0.5, out_gain)):
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def train(seed: int, target_return: float, max_steps: int) -> dict:
    """Trains until the mean return of the last 100 episodes reaches `target_return` (checked
    after each update) or `max_steps` env steps were sampled."""
    torch.manual_seed(seed)
    envs = gym.make_vec("CartPole-v1", num_envs=NUM_ENVS, vectorization_mode="vector_entry_point")
    actor, critic = mlp(2, 0.01), mlp(1, 1.0)
    params = [*actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(params, lr=LR, eps=1e-5)
    obs, _ = envs.reset(seed=seed)
    done = np.zeros(NUM_ENVS, dtype=bool)
    episode_return, recent_returns = np.zeros(NUM_ENVS), deque(maxlen=100)
    steps, mean_return = 0, float("nan")
    while steps < max_steps and steps < SCHEDULE_STEPS:
        # ROLLOUT: (step, env) arrays; a row right after `done` is a reset, not a transition.
        rows = {k: [] for k in ("obs", "action", "logp", "value", "reward", "term", "done", "valid")}
        for _ in range(NUM_STEPS):
            with torch.no_grad():
                obs_t = torch.as_tensor(obs)
                dist = torch.distributions.Categorical(logits=actor(obs_t))
                action = dist.sample()
                rows["logp"].append(dist.log_prob(action))
                rows["value"].append(critic(obs_t).squeeze(-1))
            rows["obs"].append(obs_t)
            rows["action"].append(action)
            rows["valid"].append(~done)
            obs, reward, term, trunc, _ = envs.step(action.numpy())
            done = term | trunc
            episode_return += reward
            recent_returns.extend(episode_return[done])
            episode_return[done] = 0.0
            steps += int(rows["valid"][-1].sum())
            rows["reward"].append(reward)
            rows["term"].append(term)
            rows["done"].append(done)
        # ADVANTAGES (GAE). The row after a done one holds V(final obs): a truncated episode
        # bootstraps from it, a terminated one does not, and neither propagates past its end.
        with torch.no_grad():
            values = torch.stack([*rows["value"], critic(torch.as_tensor(obs)).squeeze(-1)])
        reward, term, ends = (torch.as_tensor(np.stack(rows[k])) for k in ("reward", "term", "done"))
        advantages, last = torch.zeros_like(reward), torch.zeros(NUM_ENVS)
        for t in reversed(range(NUM_STEPS)):
            delta = reward[t] + GAMMA * values[t + 1] * ~term[t] - values[t]
            last = advantages[t] = delta + GAMMA * GAE_LAMBDA * ~ends[t] * last
        valid = torch.as_tensor(np.stack(rows["valid"])).flatten()
        batch = {k: torch.stack(rows[k]).flatten(0, 1)[valid] for k in ("obs", "action", "logp")}
        batch["advantage"] = advantages.flatten()[valid]
        batch["return"] = batch["advantage"] + values[:-1].flatten()[valid]
        # UPDATE: lr and clip decay linearly, as the zoo's lin_1e-3 and lin_0.2.
        progress_remaining = max(1.0 - steps / SCHEDULE_STEPS, 0.0)
        optimizer.param_groups[0]["lr"], clip = LR * progress_remaining, CLIP * progress_remaining
        for _ in range(NUM_EPOCHS):
            for idx in torch.randperm(len(batch["action"])).split(MINIBATCH_SIZE):
                mb = {k: v[idx] for k, v in batch.items()}
                adv = (mb["advantage"] - mb["advantage"].mean()) / (mb["advantage"].std() + 1e-8)
                dist = torch.distributions.Categorical(logits=actor(mb["obs"]))
                ratio = (dist.log_prob(mb["action"]) - mb["logp"]).exp()
                policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
                value_loss = (critic(mb["obs"]).squeeze(-1) - mb["return"]).pow(2).mean()
                optimizer.zero_grad()
                (policy_loss + VF_COEF * value_loss).backward()
                nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step()
        mean_return = float(np.mean(recent_returns)) if recent_returns else float("nan")
        if mean_return >= target_return:
            return {"reached": True, "env_steps": steps, "return_mean": mean_return}
    return {"reached": False, "env_steps": steps, "return_mean": mean_return}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=float, default=450.0)
    parser.add_argument("--max-steps", type=int, default=SCHEDULE_STEPS)
    args = parser.parse_args()
    print(train(args.seed, args.target, args.max_steps))
