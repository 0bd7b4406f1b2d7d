from tunerl.algorithms.cql.cql import CQL, CQLConfig, CQLLearner, cql_critic_loss, cql_penalty
from tunerl.algorithms.cql.discrete_cql import (
    DiscreteCQL,
    DiscreteCQLConfig,
    DiscreteCQLLearner,
    discrete_cql_loss,
)

__all__ = [
    "CQL",
    "CQLConfig",
    "CQLLearner",
    "DiscreteCQL",
    "DiscreteCQLConfig",
    "DiscreteCQLLearner",
    "cql_critic_loss",
    "cql_penalty",
    "discrete_cql_loss",
]
