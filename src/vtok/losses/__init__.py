"""Training losses: LPIPS perceptual distance (also a metric), GAN terms, the total loss."""

from vtok.losses.perceptual import LPIPS

__all__ = ["LPIPS"]
