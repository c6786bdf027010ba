"""Inference: trained models applied to whole volumes, NIfTI in and out."""
