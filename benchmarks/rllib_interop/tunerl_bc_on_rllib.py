"""tunerl's BC trains on the folder RLlib wrote (rllib_record.py) as it is.

PYTHONPATH=. python benchmarks/rllib_interop/tunerl_bc_on_rllib.py RLLIB_OUT_DIR
"""

import sys

from tunerl.algorithms.bc import BCConfig

config = (
    BCConfig()
    .environment("CartPole-v1")
    .offline_data(input_=sys.argv[1])
    .evaluation(evaluation_interval=1, evaluation_duration=10)
    .debugging(seed=0)
)
algo = config.build_algo()
for i in range(3):
    r = algo.train()
    print(
        i,
        r["num_env_steps_trained_lifetime"],
        r["evaluation"]["env_runners"]["episode_return_mean"],
        flush=True,
    )
algo.stop()
