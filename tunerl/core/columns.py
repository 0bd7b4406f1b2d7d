"""Column names of a SampleBatch, as RLlib spells them. One place, so no module types a literal."""

OBS = "obs"
ACTIONS = "actions"
REWARDS = "rewards"
TERMINATEDS = "terminateds"
TRUNCATEDS = "truncateds"
NEW_OBS = "new_obs"
ACTION_LOGP = "action_logp"
ACTION_DIST_INPUTS = "action_dist_inputs"
VF_PREDS = "vf_preds"
ADVANTAGES = "advantages"
VALUE_TARGETS = "value_targets"
EPS_ID = "eps_id"
T = "t"

DEFAULT_MODULE_ID = "default_policy"
AGENT_ID = "agent_id"

# The global state a centralised critic reads (MAPPO), before and after the row's step;
# recorded only for modules with `uses_global_state` (tunerl.core.rl_module.central_critic).
STATE = "state"
NEW_STATE = "new_state"
