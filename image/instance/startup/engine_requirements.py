"""Print the `[engine]` extra's requirements from pyproject.toml, one per line, for the image's dependency layer.

The Dockerfile installs these from pyproject.toml alone, before any source is copied, so that a code change does
not invalidate the (large) dependency layer. Standard library only: it runs on the bare base image (it asks the
base's own torch, when there is one, whether it runs on CUDA)."""

import sys
import tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as fh:
    project = tomllib.load(fh)["project"]


def _cuda_base() -> bool:
    """Does the base image's torch run on CUDA? (the default PyTorch CUDA base: yes; the test base: CPU torch)"""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.version.cuda)


cuda = _cuda_base()
for requirement in project["dependencies"] + project["optional-dependencies"]["engine"]:
    if cuda and requirement.startswith("onnxruntime"):
        # The same `onnxruntime` module with the CUDA provider: PyPI's builds since 1.19 are for CUDA 12 and
        # cuDNN 9, as the CUDA 12.x PyTorch bases carry (image/engine/caption/wd14.py loads torch's copies first).
        requirement = "onnxruntime-gpu>=1.19"
    print(requirement)
