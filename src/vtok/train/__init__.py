"""Training: the loop, the core every trainer shares (schedule, optimizer groups, EMA,
progress), checkpoints (safetensors + JSON, atomic), torchrun helpers."""

from vtok.train.config import TrainConfig
from vtok.train.loop import train

__all__ = ["TrainConfig", "train"]
