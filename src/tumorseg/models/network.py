"""A network as a ModelConfig describes it: built fresh, or holding the weights of a model file."""

import torch
from torch import nn

from tumorseg.errors import TumorsegError, short
from tumorseg.models.attention_unet import AttentionUNet, build_model
from tumorseg.models.config import ModelConfig


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
    bias = torch.tensor(target.initial_bias())
    for head in output_convolutions(model):
        head.bias.data.copy_(bias)
    return model


def network_with_weights(config: ModelConfig, weights: dict, where: str) -> nn.Module:
    """The network ``config`` describes, holding ``weights``. A model file's config can declare any
    width, so the network is first laid out on the meta device (no memory) and compared with the
    weights, which hold their own values: only a network the size of the file is ever allocated.
    Weights of another kind of number, or not finite, are refused: copied into the network they
    would be cast (complex to real, integers to floats) or spread NaN, and every voxel would come
    out as something, silently wrong."""
    with torch.device("meta"):
        layout = create_network(config).state_dict()
    expected = {name: tuple(t.shape) for name, t in layout.items()}
    given = {name: tuple(t.shape) for name, t in weights.items()}
    if expected != given:
        names = sorted(expected.keys() | given.keys(), key=str)  # a file's keys can be of any type
        name = next(n for n in names if expected.get(n) != given.get(n))
        raise TumorsegError(
            f"{where}: weights do not fit the model its config describes ({short(name)}: "
            f"{list(given[name]) if name in given else 'missing'} in the file, "
            f"{list(expected[name]) if name in expected else 'none'} in the model)"
        )
    check_numbers(weights, layout, where)
    model = create_network(config)
    model.load_state_dict(weights)  # fp16 weights of a packed model are read into float32
    return model


def check_numbers(weights: dict, layout: dict, where: str) -> None:
    """Refuse ``weights`` of another kind of number than the network's ``layout`` (a state dict of
    the same names), or not finite."""
    for name, weight in weights.items():
        kind, wanted = number_kind(weight), number_kind(layout[name])
        if kind != wanted:
            dtype = str(weight.dtype).removeprefix("torch.")
            raise TumorsegError(
                f"{where}: weight {short(name)} holds {kind} values ({dtype}) "
                f"where the network has {wanted} ones"
            )
        if weight.is_floating_point() and not bool(torch.isfinite(weight).all()):
            raise TumorsegError(f"{where}: weight {short(name)} holds NaN or infinite values")


def number_kind(tensor: torch.Tensor) -> str:
    """What a tensor's values are, whatever their precision: real floating-point, integer, boolean
    or complex."""
    if tensor.is_floating_point():
        return "real floating-point"
    if tensor.is_complex():
        return "complex"
    return "boolean" if tensor.dtype == torch.bool else "integer"


def output_convolutions(model: nn.Module) -> list[nn.Module]:
    """The convolutions that produce logits: tumorseg's head (and deep-supervision heads), or the
    last convolution of MONAI's network."""
    if isinstance(model, AttentionUNet):
        return [model.head, *model.aux_heads]
    return [[m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)][-1]]
