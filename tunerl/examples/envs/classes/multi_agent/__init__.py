"""Multi-agent example envs (`ray.rllib.examples.envs.classes.multi_agent`' place).

`MultiAgentCartPole` / `MultiAgentPendulum`: `num_agents` independent copies of the Gymnasium
env (`env_config={"num_agents": 2}`), agents `0..num_agents-1`, as RLlib's. The small envs
below have exact, deterministic dynamics and known per-agent returns, for testing runners:
`AlternatingTurnsEnv` (turn-based), `LateAndEarlyAgentsEnv` (an agent joins late, one leaves
early), `TruncatedAgentEnv` (agents truncated with a final observation and reward).
"""

from tunerl.env.multi_agent_env import make_multi_agent
from tunerl.examples.envs.classes.multi_agent.alternating_turns import AlternatingTurnsEnv
from tunerl.examples.envs.classes.multi_agent.late_and_early_agents import LateAndEarlyAgentsEnv
from tunerl.examples.envs.classes.multi_agent.truncated_agent import TruncatedAgentEnv

MultiAgentCartPole = make_multi_agent("CartPole-v1")
MultiAgentPendulum = make_multi_agent("Pendulum-v1")

# Named where they live, so pickle (and Ray) find them by reference.
for _name in ("MultiAgentCartPole", "MultiAgentPendulum"):
    globals()[_name].__name__ = globals()[_name].__qualname__ = _name
    globals()[_name].__module__ = __name__

__all__ = [
    "AlternatingTurnsEnv",
    "LateAndEarlyAgentsEnv",
    "MultiAgentCartPole",
    "MultiAgentPendulum",
    "TruncatedAgentEnv",
]
