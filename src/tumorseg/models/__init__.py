"""Models: the Attention U-Net (and MONAI's, for side-by-side comparisons)."""

import torch
from torch.nn import functional as F

from tumorseg.models.attention_unet import AttentionUNet, build_model

__all__ = ["AttentionUNet", "build_model", "forward_padded"]


def forward_padded(model: torch.nn.Module, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``model(x)`` with x zero-padded to a multiple of ``multiple`` in every spatial axis, cropped back.

    MONAI's AttentionUnet needs such sizes; tumorseg's pads inside, so this is a no-op for it.
    """
    size = x.shape[2:]
    pad = [(-s) % multiple for s in size]
    if not any(pad):
        return model(x)
    padded = F.pad(x, [p for amount in reversed(pad) for p in (0, amount)])
    return model(padded)[(..., *(slice(0, s) for s in size))]
