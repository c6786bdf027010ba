"""Attention U-Net (Oktay et al. 2018, "Attention U-Net: Learning Where to Look for the Pancreas").

A U-Net whose skip connections pass through additive attention gates, so the decoder takes
from each encoder level only what the coarser level's features point at::

    x -> enc0 ----------------------- gate -> dec0 -> head
          \\-> enc1 ------------ gate -> dec1 /
                \\-> enc2 -- gate -> dec2 /
                      \\-> bottom ---/

One definition serves 2D and 3D (``spatial_dims``). Inputs whose size is not a multiple of
2**depth are zero-padded on the way in and cropped on the way out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from tumorseg.models.blocks import CONV, MAX_POOL, DoubleConv, UpStage, pad_to_multiple


class AttentionUNet(nn.Module):
    """Attention U-Net with ``len(channels) - 1`` downsamplings.

    ``channels`` lists the feature widths from the first stage to the bottom, e.g. (16, 32, 64,
    128, 256). With ``deep_supervision``, training-mode forward also returns logits of the coarser
    decoder stages, upsampled to the input size.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 4,
        out_channels: int = 3,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str = "batch",
        deep_supervision: bool = False,
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("channels needs at least two widths (one downsampling)")
        self.spatial_dims = spatial_dims
        self.depth = len(channels) - 1
        self.deep_supervision = deep_supervision
        self.encoder = nn.ModuleList(
            DoubleConv(spatial_dims, c_in, c_out, norm)
            for c_in, c_out in zip((in_channels, *channels[:-1]), channels, strict=True)
        )
        self.pool = MAX_POOL[spatial_dims](kernel_size=2)
        self.decoder = nn.ModuleList(
            UpStage(spatial_dims, skip, coarse, norm)
            for skip, coarse in zip(channels[:-1], channels[1:], strict=True)
        )
        conv = CONV[spatial_dims]
        self.head = conv(channels[0], out_channels, kernel_size=1)
        self.aux_heads = nn.ModuleList(
            conv(c, out_channels, kernel_size=1) for c in (channels[1:-1] if deep_supervision else ())
        )

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...] | tuple[torch.Tensor, list[torch.Tensor]]:
        size = x.shape[2:]
        padded = pad_to_multiple(x, 2**self.depth)
        x, was_padded = padded, padded is not x

        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        attention, decoded = [], []
        for stage in reversed(self.decoder):
            x, alpha = stage(skips.pop(), x)
            attention.append(alpha)
            decoded.append(x)

        crop = (..., *(slice(0, s) for s in size))
        logits = self.head(x)
        if was_padded:  # only then: an unpadded forward holds no size-specific slicing
            logits = logits[crop]
        if return_attention:  # finest gate first, each on its own level's grid
            maps = []
            for level, alpha in enumerate(reversed(attention)):
                maps.append(alpha[(..., *(slice(0, -(-s // 2**level)) for s in size))])
            return logits, maps
        if self.deep_supervision and self.training:
            # decoded[-1] is the finest stage (the main head); the others, coarse to fine
            aux = [
                F.interpolate(head(feat), size=x.shape[2:], mode="nearest")[crop]
                for head, feat in zip(reversed(self.aux_heads), decoded[:-1], strict=True)
            ]
            return (logits, *reversed(aux))
        return logits


def build_model(
    name: str = "attention_unet",
    *,
    in_channels: int = 4,
    out_channels: int = 3,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    norm: str = "batch",
    deep_supervision: bool = False,
    spatial_dims: int = 2,
) -> nn.Module:
    """tumorseg's Attention U-Net, or MONAI's (``monai_attention_unet``) for comparisons."""
    if name == "attention_unet":
        return AttentionUNet(spatial_dims, in_channels, out_channels, channels, norm, deep_supervision)
    if name == "monai_attention_unet":
        from monai.networks.nets import AttentionUnet

        return AttentionUnet(
            spatial_dims, in_channels, out_channels, channels, strides=[2] * (len(channels) - 1)
        )
    raise ValueError(f"unknown model {name!r}; choose attention_unet or monai_attention_unet")
