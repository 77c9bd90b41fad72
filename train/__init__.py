"""Training stack of Tri-Ergon (VAE, DiT and LUFS-predictor trainers, launched with torchrun).

Models know nothing about distribution; the trainers in this package call the same modules the sampler
calls. The trainers arrive with the training issue.
"""
