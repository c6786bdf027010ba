"""Building blocks of the Attention U-Net, for 2D or 3D through ``spatial_dims``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: The layers of a network by its number of spatial axes. Plain torch classes (MONAI's factories
#: give the same ones): importing MONAI would cost predict more than segmenting a patient does.
CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
NORMS = {
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
}


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the spatial axes of ``x`` (at their ends) to multiples of ``multiple``; ``x`` itself
    when they already are."""
    pad = [(-s) % multiple for s in x.shape[2:]]
    if not any(pad):
        return x
    return F.pad(x, [p for amount in reversed(pad) for p in (0, amount)])


def norm_layer(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "instance":
        return NORMS[kind][spatial_dims](channels, affine=True)
    return NORMS[kind][spatial_dims](channels)


class DoubleConv(nn.Sequential):
    """(3x3 conv -> norm -> ReLU) twice: one encoder or decoder stage of the U-Net."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str = "batch"):
        conv = CONV[spatial_dims]
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(norm, spatial_dims, out_channels),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(norm, spatial_dims, out_channels),
            nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Fig. 2).

    The skip features ``x`` are weighted by coefficients alpha in [0, 1] computed from ``x``
    and the gating signal ``g`` of the next coarser level:
    ``alpha = sigmoid(psi(relu(W_x x + W_g g)))``. As in the paper, ``x`` is brought to ``g``'s
    resolution by a strided W_x, so the gate runs on the coarse grid; alpha is then resampled
    to ``x``'s grid.
    """

    def __init__(self, spatial_dims: int, skip_channels: int, gate_channels: int, inter_channels: int):
        super().__init__()
        conv = CONV[spatial_dims]
        self.theta_x = conv(skip_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.phi_g = conv(gate_channels, inter_channels, kernel_size=1, bias=True)
        self.psi = conv(inter_channels, 1, kernel_size=1, bias=True)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the gated skip features and the attention coefficients (on x's grid)."""
        coarse = F.relu(self.theta_x(x) + self.phi_g(g))
        alpha = torch.sigmoid(self.psi(coarse))
        # scale_factor, not size: the same graph then serves every input size (ONNX export)
        alpha = F.interpolate(alpha, scale_factor=2, mode=self.mode, align_corners=False)
        return x * alpha, alpha


class UpStage(nn.Module):
    """Decoder stage: gate the skip with the coarser features, upsample those, concatenate, convolve."""

    def __init__(self, spatial_dims: int, skip_channels: int, coarse_channels: int, norm: str):
        super().__init__()
        self.gate = AttentionGate(spatial_dims, skip_channels, coarse_channels, max(skip_channels // 2, 1))
        self.up = CONV_TRANSPOSE[spatial_dims](coarse_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(spatial_dims, 2 * skip_channels, skip_channels, norm)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gated, alpha = self.gate(skip, coarse)
        return self.conv(torch.cat([gated, self.up(coarse)], dim=1)), alpha
