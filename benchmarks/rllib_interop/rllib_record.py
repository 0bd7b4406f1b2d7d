"""RLlib 2.60 (peers venv) records PPO CartPole-v1 rows as plain Parquet columns.

/work/peers-venv/bin/python benchmarks/rllib_interop/rllib_record.py OUT_DIR
"""

import sys

from ray.rllib.algorithms.ppo import PPOConfig

out = sys.argv[1]
config = (
    PPOConfig()
    .environment("CartPole-v1")
    .env_runners(num_env_runners=0)
    .offline_data(
        output=out,
        output_compress_columns=[],
        output_write_episodes=False,
        output_max_rows_per_file=1000,
    )
)
algo = config.build_algo()
for i in range(3):
    r = algo.train()
    print(i, r["env_runners"]["episode_return_mean"], flush=True)
algo.stop()
