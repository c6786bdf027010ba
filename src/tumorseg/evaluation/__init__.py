"""Evaluation: metrics, figures and reports."""
