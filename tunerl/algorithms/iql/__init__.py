from tunerl.algorithms.iql.iql import IQL, IQLConfig, IQLLearner, IQLModule, iql_losses

__all__ = ["IQL", "IQLConfig", "IQLLearner", "IQLModule", "iql_losses"]
