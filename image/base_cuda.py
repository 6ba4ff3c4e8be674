"""The CUDA runtime the instance image is built on, and so the oldest driver CUDA a machine must offer to run it.

The Dockerfile's default base is `pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime` (tests/image/test_base_cuda.py holds
the two together). A host whose driver supports only an older CUDA cannot start the image: the offers are filtered
on it (Vast `cuda_max_good`, providers.md §1.2; dstack asks `cuda_max_good >= 12.8` too, dstackai/dstack
`backends/vastai/compute.py`) and RunPod's create carries it as `minCudaVersion` (providers.md §2.3).
"""

BASE_CUDA = 12.8


def cuda_text(version: float = BASE_CUDA) -> str:
    """RunPod's spelling: a string such as "12.8"."""
    return f"{version:.1f}"
