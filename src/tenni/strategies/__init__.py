"""Ways to adapt a backbone to labeled data, each a scikit-learn estimator registered by name.

probe (frozen features + logistic regression), finetune (all weights), lora (PEFT adapters), setfit
(contrastive pair tuning + head), scratch (TF-IDF + logistic regression: the no-transfer baseline).
"""

from .base import Strategy, config_help, get_strategy_class, register_strategy, strategy_names

__all__ = ["Strategy", "config_help", "get_strategy_class", "register_strategy", "strategy_names"]
