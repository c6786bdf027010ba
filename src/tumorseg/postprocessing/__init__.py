"""Post-processing of a decoded label map, in one package: the rule a model carries and applies
(``rules``), the tumor growth it may hold (``growth``), and choosing both on the out-of-fold
predictions of cross-validation (``choice``, which alone needs the metrics and PyTorch).
"""

from tumorseg.postprocessing.rules import PostProcessing

__all__ = ["PostProcessing"]
