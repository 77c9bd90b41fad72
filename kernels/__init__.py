"""Fused ops for Tri-Ergon. Each op module holds its pure-PyTorch reference (the CPU path and test oracle).

Nothing here imports Triton at package import time.
"""
