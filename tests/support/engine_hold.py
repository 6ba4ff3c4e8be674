"""Hold the engine on a fake instance at a named point (image/hold_points.py): the point names go into the next
rental's environment (the fake host's SetEnv, so only that instance's processes see them), and the marker a held
process writes says it is there. Fault and e2e tests act on a known state this way instead of racing the engine (a
tiny model trains a step in a fraction of a second):

    engine:state:<N>  the checkpoint and the resume state of step N exist, nothing later does
    engine:caching    the engine is about to cache latents (nothing trained yet)
    engine:grid       the final LoRA and its state are saved, the grid is not rendered

A process held by `hold_next_rentals` is never released: the interruption that follows kills the instance's
processes. `hold_engines_until_stopping` holds every engine and lets go once the controller waits for them to stop.
"""

from __future__ import annotations

from pathlib import Path

from lorarun.image.hold_points import HOLD_DIR_ENV, HOLD_ENV, marker_stem

CACHING = "engine:caching"
GRID = "engine:grid"


def state_point(step: int) -> str:
    return f"engine:state:{step}"


def hold_next_rentals(cloud, tmp: Path, points: list[str | None]) -> None:
    """Each next rental of `cloud` holds its engine at the next point of `points` (None: no hold)."""
    original = cloud.fake.on_create
    plan = list(points)

    def on_create(instance_id, env, public_key):
        point = plan.pop(0) if plan else None
        if point:
            folder = tmp / "holds" / str(instance_id)
            folder.mkdir(parents=True, exist_ok=True)
            env = dict(env, **{HOLD_ENV: point, HOLD_DIR_ENV: str(folder)})
        return original(instance_id, env, public_key)

    cloud.fake.on_create = on_create


def held_at(tmp: Path, instance_id: str, point: str) -> bool:
    """Whether the engine of `instance_id` is held at `point`."""
    return (tmp / "holds" / str(instance_id) / f"{marker_stem(point)}.reached").is_file()


# The forms the tests use.
def hold_at(cloud, tmp: Path, steps: list[int | None]) -> None:
    hold_next_rentals(cloud, tmp, [state_point(s) if s else None for s in steps])


def hold_call_at(cloud, tmp: Path, point: str) -> None:
    hold_next_rentals(cloud, tmp, [point])


# The first epoch of support.cloud.tiny_job (2 images x 2 repeats, batch 2) ends at step 2: its checkpoint
# (<name>-000001.safetensors) and resume state exist when the engine holds here.
FIRST_EPOCH = state_point(2)


def hold_engines_until_stopping(cloud, monkeypatch, holds, point: str, *, stops: int = 1) -> None:
    """Every engine `cloud` starts holds at `point` until the controller has sent `stops` stops and waits for the
    engines to save, so a fast machine cannot finish a tiny job before the stop lands (on an idle one thirty epochs
    take seconds). The hold is let go from the pipeline's poll for the engine to stop (runner/run/training.py); the
    engines then see their stop flags and save. A test that kills the engine instead needs no release."""
    from lorarun.runner.run import training

    cloud.host.extra_env.update(holds.env(point))
    real_poll = training.poll
    waiting: list[str] = []

    def poll(done, *, what, **kwargs):
        if what.startswith("the engine to save"):
            waiting.append(what)
            if len(waiting) == stops:
                holds.release(point)
        return real_poll(done, what=what, **kwargs)

    monkeypatch.setattr(training, "poll", poll)
