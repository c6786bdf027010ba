"""Models: the Attention U-Net (and MONAI's, for side-by-side comparisons), built from a ModelConfig."""

from torch import nn

from tumorseg.models.attention_unet import AttentionUNet, build_model
from tumorseg.models.config import ModelConfig

__all__ = ["AttentionUNet", "ModelConfig", "build_model", "create_network"]


def create_network(config: ModelConfig) -> nn.Module:
    """A fresh network as ``config`` describes it, its output biases at the target's tumor prior."""
    target = config.target_spec()
    model = build_model(
        config.name,
        spatial_dims=config.dims,
        in_channels=config.in_channels,
        out_channels=target.channels,
        channels=config.channels,
        norm=config.norm,
        deep_supervision=config.deep_supervision,
    )
    bias = target.initial_bias()
    for head in output_convolutions(model):
        head.bias.data.copy_(bias)
    return model


def output_convolutions(model: nn.Module) -> list[nn.Module]:
    """The convolutions that produce logits: tumorseg's head (and deep-supervision heads), or the
    last convolution of MONAI's network."""
    if isinstance(model, AttentionUNet):
        return [model.head, *model.aux_heads]
    return [[m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)][-1]]
