"""RLlib 2.60 (peers venv) trains its BC on a folder of tunerl-recorded Parquet files and
evaluates it in CartPole-v1. Without map_batches_kwargs concurrency 1 / num_cpus 0.5, RLlib's
data pipeline made no progress on 2 cores (killed after 900 s and 420 s).

    /work/peers-venv/bin/python benchmarks/rllib_interop/rllib_bc_on_tunerl.py DIR ITERATIONS
"""

import glob
import sys

from ray.rllib.algorithms.bc import BCConfig

files = sorted(glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True))
config = (
    BCConfig()
    .environment("CartPole-v1")
    .offline_data(
        input_=files,
        input_read_method_kwargs={},
        dataset_num_iters_per_learner=50,
        map_batches_kwargs={"concurrency": 1, "num_cpus": 0.5},
        iter_batches_kwargs={"prefetch_batches": 1},
    )
    .evaluation(
        evaluation_interval=1,
        evaluation_num_env_runners=0,
        evaluation_duration=10,
        evaluation_duration_unit="episodes",
    )
)
algo = config.build_algo()
for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
    r = algo.train()
    print("iter", i, r["evaluation"]["env_runners"].get("episode_return_mean"), flush=True)
algo.stop()
