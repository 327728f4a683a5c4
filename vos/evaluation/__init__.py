"""Evaluation: J (region similarity) and F (contour accuracy) kernels (``metrics``) and the
protocols that score a results folder against ground truth (``davis2017``).
"""
