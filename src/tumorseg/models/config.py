"""What a network *is*: enough to rebuild it, and nothing about how it was trained.

Checkpoints store it on its own (``model_config``), so that inference never has to read or
validate training settings such as the learning rate or the number of workers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from tumorseg import settings
from tumorseg.data.case import MAX_SIDE, MODALITIES
from tumorseg.errors import TumorsegError
from tumorseg.labels import TARGETS, Target
from tumorseg.settings import option

if TYPE_CHECKING:
    import torch

ARCHITECTURES = ("attention_unet", "monai_attention_unet")
#: Stages of a network (a stride of 128) and voxels of a 3D patch (e.g. 160 x 192 x 128) at most:
#: inputs are padded to multiples of the stride and slid over patch by patch, so a model file
#: declaring more would make predict allocate in proportion (16 stages pad a slice to 32768^2).
MAX_STAGES, MAX_PATCH_VOXELS = 8, 2**22
#: The widest stage a config may describe (nnU-Net's widest is 320, the shipped networks' 256): a
#: number, not a size in memory, which a model file's weights are checked against when it is read.
MAX_WIDTH = 16_384
#: The coarsest voxel a model may learn from, in mm.
MAX_SPACING = 100.0


@dataclass
class ModelConfig:
    name: str = option("attention_unet", "attention_unet, or monai_attention_unet for comparisons")
    channels: list = option([16, 32, 64, 128, 256], "feature widths from the first stage to the bottom")
    norm: str = option("batch", "batch or instance normalization")
    deep_supervision: bool = option(False, "add losses on the coarser decoder stages")
    target: str = option(
        "regions", "regions: sigmoid WT/TC/ET with Dice+BCE; labels: softmax classes, Dice+CE"
    )
    modalities: list = option(list(MODALITIES), "input channels, in order", flag=False)
    spacing: list = option(
        [1.0, 1.0, 1.0],
        "voxel size in mm (left-right, front-back, bottom-top) of the data it learned from; predict "
        "resamples other cases to it",
        flag=False,
    )
    dims: int = option(
        2, "2: a 2D network on axial slices; 3: a 3D network trained on patches and slid over a volume"
    )
    patch: list = option(
        [128, 128, 128],
        "3D only: the patch (depth, height, width) it trains on and slides over a volume; multiples "
        "of the network's stride",
    )
    context: int = option(
        0,
        "2.5D input: each slice comes with this many neighbouring slices on either side as extra "
        "channels (4 x (2N + 1) in all), so that a 2D network sees some through-plane shape",
    )
    modality_dropout: float = option(
        0.0,
        "train with each sequence zeroed with this probability (never all), so that the model can "
        "segment cases with sequences missing",
    )

    @classmethod
    def from_mapping(cls, values: dict, where: str, base: ModelConfig | None = None) -> ModelConfig:
        """``base`` (or the defaults) updated with ``values``; unknown keys and bad values are named."""
        return cls(**settings.merged(cls, values, where, base)).validate(where)

    def validate(self, where: str = "model config") -> ModelConfig:
        settings.check(
            [
                (self.name in ARCHITECTURES, "name", " or ".join(ARCHITECTURES)),
                (
                    2 <= len(self.channels) <= MAX_STAGES and all(c > 0 for c in self.channels),
                    "channels",
                    f"2 to {MAX_STAGES} positive ints",
                ),
                (
                    all(c <= MAX_WIDTH for c in self.channels),
                    "channels",
                    f"widths of at most {MAX_WIDTH:,}",
                ),
                (self.norm in ("batch", "instance"), "norm", "batch or instance"),
                (self.target in TARGETS, "target", " or ".join(TARGETS)),
                (self.dims in (2, 3), "dims", "2 or 3"),
                (0 <= self.modality_dropout < 1, "modality_dropout", "in [0, 1)"),
                (isinstance(self.context, int) and 0 <= self.context <= 8, "context", "an int in 0..8"),
                (
                    len(self.spacing) == 3 and all(0 < s <= MAX_SPACING for s in self.spacing),
                    "spacing",
                    f"three sizes in (0, {MAX_SPACING:g}] mm",
                ),
                (
                    len(self.patch) == 3 and all(0 < p <= MAX_SIDE for p in self.patch),
                    "patch",
                    f"three sizes in 1..{MAX_SIDE}",
                ),
            ],
            self,
            where,
        )
        if self.dims == 3:
            settings.check(
                [
                    (self.context == 0, "context", "0 with dims 3 (a 3D network sees its neighbours)"),
                    (
                        len(self.patch) == 3
                        and all(p > 0 and p % self.stride == 0 for p in self.patch)
                        and math.prod(self.patch) <= MAX_PATCH_VOXELS,
                        "patch",
                        f"three multiples of the stride {self.stride}, {MAX_PATCH_VOXELS} voxels at most",
                    ),
                ],
                self,
                where,
            )
        if self.name == "monai_attention_unet" and self.deep_supervision:
            raise TumorsegError(f"{where}: deep_supervision needs model attention_unet")
        if tuple(self.modalities) != MODALITIES:
            raise TumorsegError(
                f"{where}: model was trained on modalities {list(self.modalities)}, not {list(MODALITIES)}"
            )
        return self

    @property
    def stride(self) -> int:
        """The network's total downsampling: inputs are padded to multiples of it."""
        return 2 ** (len(self.channels) - 1)

    @property
    def channels_last(self) -> torch.memory_format:
        """The channels-last memory format of the network's inputs and weights (faster on CPU and GPU)."""
        import torch  # here: only a network in PyTorch has a memory format

        return torch.channels_last_3d if self.dims == 3 else torch.channels_last

    @property
    def in_channels(self) -> int:
        """Input channels: every modality of the slice and of its neighbours."""
        return len(self.modalities) * (2 * self.context + 1)

    def target_spec(self) -> Target:
        return Target(self.target)

    def to_dict(self) -> dict:
        return asdict(self)
