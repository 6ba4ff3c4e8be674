"""The training engine: `parse → validate → train(cfg)`. Runs inside the container and for the `local` provider.

Importing this package is cheap and torch-free; the heavy modules (models, train, sample) import torch themselves.
"""
