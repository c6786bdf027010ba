"""Models: the Attention U-Net (and MONAI's, for side-by-side comparisons), built from a ModelConfig.

The package itself holds only ``ModelConfig``, what a network is, so that reading it does not
import PyTorch (prediction with ONNX Runtime needs the config, not the network); the networks are
in ``attention_unet`` and ``blocks``, and ``network`` builds them from a config.
"""

from tumorseg.models.config import ModelConfig

__all__ = ["ModelConfig"]
