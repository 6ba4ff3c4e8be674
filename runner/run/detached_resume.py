"""`lorarun attach` of an interruptible job whose machine the provider took back while the laptop was detached.

Nothing on the instance can help then: a Vast outbid instance is stopped with its container (vast-ai/docs
`faq/rental-types.mdx`: "stopped (not destroyed) and storage keeps billing"), a RunPod spot pod is EXITED or gone
(providers.md §2.8), so the agent and its lease watchdog are not running. The laptop still holds everything a new
rental needs: the dataset, the checkpoints and the engine's newest resume state (pulled home as they appeared,
runner/run/resume_state.py). So `attach` does what the attached controller would have done on noticing it
(runner/run/interruption.py `re_rent`): destroy and confirm the interrupted instance, rank the offers again as
`submit` did (the same machine excluded), rent the next, and let the pipeline upload, push the state and go on from
that step. `lorarun down` never rents: it only ends the job with what is home.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorarun.runner.console import err_console
from lorarun.runner.price.choose import rank_offers
from lorarun.runner.run import interruption

if TYPE_CHECKING:  # the run's context, not the pipeline that calls in here (no cycle)
    from lorarun.runner.run.context import RunContext


def resume_if_taken_back(pipeline: RunContext, *, stop: bool) -> bool:
    """On a reattached interruptible rental whose instance the provider stopped or dropped: resume the job on a new
    rental (True), else leave the pipeline as it was (False)."""
    instance = pipeline.rental.instance
    if stop or pipeline.ranked or instance is None or not interruption.is_interruptible(pipeline):
        return False  # a submission (it has its ranking), `down`, or an on-demand rental
    reason = interruption.interruption_reason(instance)
    if reason is None:
        return False  # still running: attach follows it as usual
    run = pipeline.primary
    err_console.print(
        f"[yellow]{pipeline.provider.name} took instance {instance.id} back while lorarun was detached "
        f"({reason})[/]; looking for another machine to resume on",
        highlight=False,
    )
    pipeline.ranked = rank_offers(pipeline.provider, [r.job for r in pipeline.runs])
    if not pipeline.ranked:
        err_console.print(
            f"no offer fits {run.job.spec.name} now; destroying the interrupted instance", highlight=False
        )
    interruption.re_rent(pipeline, interruption.InstanceInterrupted(instance.id, reason))
    return True
