"""Ways to adapt a backbone to labeled data, each a scikit-learn estimator registered by name (see :mod:`.registry`).

probe (frozen features + logistic regression), finetune (all weights), lora (PEFT adapters), setfit
(contrastive pair tuning + head), hybrid (probe + TF-IDF), auto (a budgeted race), scratch (the no-transfer
baseline), patchcore (anomaly detection).
"""

from ..config import config_help
from .registry import StrategyEntry, get_entry, get_strategy_class, register_strategy, strategy_names

__all__ = ["StrategyEntry", "config_help", "get_entry", "get_strategy_class", "register_strategy", "strategy_names"]
