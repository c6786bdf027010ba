"""Models: the Attention U-Net (and MONAI's, for side-by-side comparisons)."""

from tumorseg.models.attention_unet import AttentionUNet, build_model

__all__ = ["AttentionUNet", "build_model"]
