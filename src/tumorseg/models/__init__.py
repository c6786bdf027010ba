"""Models: the Attention U-Net (and MONAI's, for side-by-side comparisons)."""

import torch

from tumorseg.models.attention_unet import AttentionUNet, build_model
from tumorseg.models.blocks import pad_to_multiple

__all__ = ["AttentionUNet", "build_model", "forward_padded"]


def forward_padded(model: torch.nn.Module, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``model(x)`` with x zero-padded to a multiple of ``multiple`` in every spatial axis, cropped back.

    MONAI's AttentionUnet needs such sizes; tumorseg's pads inside, so this is a no-op for it.
    """
    padded = pad_to_multiple(x, multiple)
    if padded is x:
        return model(x)
    return model(padded)[(..., *(slice(0, s) for s in x.shape[2:]))]
