"""The training application: ``python -m ipu_cnn.train`` (``--help`` for its options), its YAML configs, the loops,
schedules, checkpoints and logs. ``python -m ipu_cnn.train.validate`` validates saved checkpoints."""
from __future__ import annotations

from ipu_cnn.train.config import RunOptions, build_parser, config_from_mapping, named_configs, parse_config
from ipu_cnn.train.plan import RunPlan
from ipu_cnn.train.run import train

__all__ = ["RunOptions", "RunPlan", "build_parser", "config_from_mapping", "named_configs", "parse_config", "train"]
