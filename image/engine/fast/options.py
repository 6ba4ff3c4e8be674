"""Which levers of the fast step a run uses, decided once from the config and the machine."""

from __future__ import annotations

from dataclasses import dataclass

from lorarun.image.engine_config import FAST_STEP_LEVERS


@dataclass(frozen=True)
class FastOptions:
    master_weights: bool = True
    flat_optimizer: bool = True
    fused_lora: bool = True
    compile: bool = True
    cuda_graphs: bool = True
    lean_checkpointing: bool = True
    compile_backend: str = "inductor"  # "aot_eager" traces the same graphs without code generation (CPU tests)

    def without(self, *levers: str) -> FastOptions:
        unknown = [lever for lever in levers if lever not in FAST_STEP_LEVERS]
        if unknown:
            raise ValueError(f"unknown fast-step lever(s): {', '.join(unknown)}")
        return FastOptions(**{**self.__dict__, **dict.fromkeys(levers, False)})

    def active(self) -> list[str]:
        return [lever for lever in FAST_STEP_LEVERS if getattr(self, lever)]


@dataclass(frozen=True)
class FastDecision:
    options: FastOptions | None  # None = the plain step
    reason: str  # one line for the `started`/warning events


def decide(mode: str, off: tuple[str, ...], *, cuda: bool, world: int, mixed: str, optimizer: str) -> FastDecision:
    """The fast step or the plain one, and why. "auto" turns it on only where it has been designed to pay:
    one CUDA process training in bf16 (fp16 needs loss scaling, which the master-weights path does not do)."""
    if mode == "off":
        return FastDecision(None, "fast_step off")
    blockers = []
    if world > 1:
        blockers.append("data-parallel runs use the plain step")
    if mixed == "fp16":
        blockers.append("fp16 mixed precision needs loss scaling (the plain step has it)")
    if mode == "auto" and not cuda:
        blockers.append("auto turns it on for CUDA only")
    if blockers:
        return FastDecision(None, "plain step: " + "; ".join(blockers))
    options = FastOptions().without(*off)
    if not cuda:
        options = options.without("cuda_graphs")
    if mixed == "no":
        options = options.without("master_weights")  # fp32 weights already: nothing to keep a master of
    if optimizer == "Adafactor":
        # Adafactor factors 2-D moments per matrix: one flat vector would change its math
        options = options.without("flat_optimizer")
    if not options.compile:
        options = options.without("cuda_graphs")  # graphs come from the compiled UNet
    return FastDecision(options, "fast step: " + (", ".join(options.active()) or "no levers"))
