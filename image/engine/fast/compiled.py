"""torch.compile of the UNet with shapes bounded by the run's bucket set.

`dynamic=False`: every (batch size, latent height, latent width) the run will feed gets its own static graph,
compiled on the first batch of that shape and replayed after. The run's shapes are known before training (the
epoch plan is deterministic, and every epoch has the same batches per bucket), so the recompile limit is set to
their number plus a margin: no shape ever falls back to eager, and a shape outside the plan (a bug) shows as a
recompile in the counters. With CUDA graphs (`mode="reduce-overhead"`) each shape's graph is also captured once.
"""

from __future__ import annotations

import torch
from torch import nn

RECOMPILE_MARGIN = 2  # eval/train or grad-mode flips, e.g. a sample render calling the compiled module


def batch_shapes(batches: list[list[int]], buckets: list[tuple[int, int]]) -> set[tuple[int, int, int]]:
    """(batch size, latent height, latent width) of every batch; `buckets[i]` is item i's (width, height)."""
    out = set()
    for batch in batches:
        width, height = buckets[batch[0]]
        out.add((len(batch), height // 8, width // 8))
    return out


class StepMarked(nn.Module):
    """Tells CUDA-graph trees that a new training step starts before each forward: the previous step's graph
    outputs (already consumed by its backward) may then be overwritten safely."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return self.module(*args, **kwargs)


def compile_unet(
    unet: nn.Module,
    num_shapes: int,
    *,
    backend: str = "inductor",
    cuda_graphs: bool = False,
    eager_on_error: bool = False,
):
    """`eager_on_error`: a graph that fails to compile runs eagerly instead of ending the run (the engine: a paid
    GPU hour should not die on a compiler bug; dynamo logs the error to stderr). Tests and the benchmark want the
    error."""
    import torch._dynamo

    if eager_on_error:
        torch._dynamo.config.suppress_errors = True

    limit = _raise_limit(("recompile_limit", "cache_size_limit"), num_shapes + RECOMPILE_MARGIN)
    _raise_limit(("accumulated_recompile_limit", "accumulated_cache_size_limit"), limit * 4)
    kwargs = {}
    if backend == "inductor":
        kwargs["mode"] = "reduce-overhead" if cuda_graphs else "default"
    compiled = torch.compile(unet, backend=backend, dynamic=False, **kwargs)
    return StepMarked(compiled) if cuda_graphs else compiled


def _raise_limit(names: tuple[str, ...], at_least: int) -> int:
    """Raise a dynamo limit to `at_least` under whichever name this torch has (renamed in torch 2.7)."""
    import torch._dynamo

    config = torch._dynamo.config
    for name in names:
        if hasattr(config, name):
            value = max(getattr(config, name), at_least)
            setattr(config, name, value)
            return value
    return at_least


def compile_count() -> int:
    """Graphs dynamo has compiled in this process (for tests and the benchmark: one per shape, no more)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
