"""Gymnasium's CartPole as an outside simulator: it runs its own loop in this process and
asks a tunerl server (an `ExternalEnvRunner`) for actions, or acts locally and sends its
episodes. Start the training side first, e.g.

    config = (PPOConfig()
        .environment(observation_space=..., action_space=..., env_config={"port": 5555})
        .env_runners(env_runner_cls=ExternalEnvRunner))

then `python -m tunerl.examples.envs.external_cartpole_client --port 5555 --mode remote`.
It runs until `--max-steps` or until the server goes away.
"""

from __future__ import annotations

import argparse
import logging

import gymnasium as gym

from tunerl.env.external import LocalInferenceClient, RemoteInferenceClient

logger = logging.getLogger(__name__)


def run_remote(
    client: RemoteInferenceClient, envs: list[gym.Env], seed: int, max_steps: int
) -> int:
    """Steps every env once per round trip: one `step` message carries them all."""
    entries = [{"env": i, "obs": env.reset(seed=seed + i)[0]} for i, env in enumerate(envs)]
    steps = 0
    while steps < max_steps:
        actions = client.step_many(entries)
        entries = []
        for i, (env, action) in enumerate(zip(envs, actions)):
            obs, reward, terminated, truncated, _ = env.step(action)
            entry = {"env": i, "obs": obs, "reward": float(reward)}
            entry.update(terminated=terminated, truncated=truncated)
            if terminated or truncated:
                entry["reset_obs"] = env.reset()[0]
            entries.append(entry)
        steps += len(envs)
    return steps


def run_local(client: LocalInferenceClient, envs: list[gym.Env], seed: int, max_steps: int) -> int:
    """Acts with the client's own module copy; episodes go to the server when they end."""
    actions = [client.start(env.reset(seed=seed + i)[0], env=i) for i, env in enumerate(envs)]
    steps = 0
    while steps < max_steps:
        for i, env in enumerate(envs):
            obs, reward, terminated, truncated, _ = env.step(actions[i])
            actions[i] = client.step(obs, reward, terminated, truncated, env=i)
            if actions[i] is None:
                actions[i] = client.start(env.reset()[0], env=i)
        steps += len(envs)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--mode", choices=("remote", "local"), default="remote")
    parser.add_argument("--num-envs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=10**9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", default=None)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    envs = [gym.make("CartPole-v1") for _ in range(args.num_envs)]
    if args.mode == "remote":
        client = RemoteInferenceClient(args.host, args.port, args.token, args.timeout_s)
        run = run_remote
    else:
        client = LocalInferenceClient(
            args.host, args.port, args.token, args.timeout_s, seed=args.seed
        )
        run = run_local
    try:
        steps = run(client, envs, args.seed, args.max_steps)
    except (ConnectionError, OSError) as error:
        logger.warning("The server went away (%s); stopping.", error)
        return 0
    finally:
        client.close()
    logger.info("Sent %d env steps.", steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
