"""Training: the loop, checkpoints (safetensors + JSON, atomic), torchrun helpers."""

from vtok.train.config import TrainConfig
from vtok.train.loop import train

__all__ = ["TrainConfig", "train"]
