"""Hold the engine on a fake instance at a named point (image/hold_points.py): the point names go into the next
rental's environment (the fake host's SetEnv, so only that instance's processes see them), and the marker a held
process writes says it is there. Fault and e2e tests act on a known state this way instead of racing the engine (a
tiny model trains a step in a fraction of a second):

    engine:state:<N>  the checkpoint and the resume state of step N exist, nothing later does
    engine:caching    the engine is about to cache latents (nothing trained yet)
    engine:grid       the final LoRA and its state are saved, the grid is not rendered

A held process is never released here: the interruption that follows kills the instance's processes.
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
