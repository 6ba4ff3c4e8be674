"""A named hold point in the engine on a fake instance: "resume state of step N published".

Fault and e2e tests must not race the engine (a tiny model trains a step in a fraction of a second). This puts a
`sitecustomize` on the instance's PYTHONPATH that, once the engine imports `lorarun.image.engine.state`, wraps its
`finalise` (image/engine/state.py: the resume state and `latest.json` are published there, after the checkpoint
file and its event): at the step named in LORARUN_TEST_HOLD_STEP it writes `<work>/held-<step>` and waits for
ever. Nothing moves on the instance from then on, so the test can act on a known state: the checkpoint and the
resume state of that step exist, nothing later does. Only the fake instance's processes see it (the fake host's
SetEnv); the laptop's processes and the real image never do.
"""

from __future__ import annotations

from pathlib import Path

HOLD_ENV = "LORARUN_TEST_HOLD_STEP"
HOLD_CALL_ENV = "LORARUN_TEST_HOLD_CALL"
CACHING = "lorarun.image.engine.data:cache_latents"
GRID = "lorarun.image.engine.sample:render_grid"

SITECUSTOMIZE = """
import importlib.abc
import importlib.machinery
import os
import sys
import time

_STEP = int(os.environ.get("LORARUN_TEST_HOLD_STEP") or 0)
# "module:function": hold when the engine calls it (e.g. caching latents, rendering the grid)
_CALL = os.environ.get("LORARUN_TEST_HOLD_CALL") or ""
_TARGETS = {"lorarun.image.engine.state": "step"}
if _CALL:
    _TARGETS[_CALL.split(":")[0]] = "call"


def _wait(marker_dir, name):
    with open(os.path.join(marker_dir, name), "w") as f:
        f.write(str(os.getpid()))
    while True:  # the named point: until the instance is interrupted (SIGKILL) or destroyed
        time.sleep(3600)


def _hold_call(module):
    name = _CALL.split(":")[1]
    original = getattr(module, name)

    def held(*args, **kwargs):
        _wait(os.environ.get("LORARUN_WORKDIR") or ".", "held-call")
        return original(*args, **kwargs)

    setattr(module, name, held)


def _hold(module):
    original = module.finalise

    def finalise(state_root, progress, *args, **kwargs):
        out = original(state_root, progress, *args, **kwargs)
        if progress.global_step == _STEP:
            _wait(os.path.dirname(os.fspath(state_root)), "held-%d" % _STEP)
        return out

    module.finalise = finalise


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def run(module):
            exec_module(module)
            (_hold if _TARGETS[name] == "step" else _hold_call)(module)

        loader.exec_module = run
        return spec


if _STEP or _CALL:
    sys.meta_path.insert(0, _Finder())
"""


def hold_dir(tmp: Path) -> Path:
    """A folder holding the `sitecustomize` above, for the instance's PYTHONPATH."""
    folder = tmp / "engine-hold"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return folder


def hold_at(cloud, tmp: Path, steps: list[int | None]) -> None:
    """Each next rental of `cloud` holds its engine at the next step of `steps` (None: no hold)."""
    folder = hold_dir(tmp)
    original = cloud.fake.on_create
    plan = list(steps)

    def on_create(instance_id, env, public_key):
        step = plan.pop(0) if plan else None
        if step:
            env = dict(env, PYTHONPATH=str(folder), **{HOLD_ENV: str(step)})
        return original(instance_id, env, public_key)

    cloud.fake.on_create = on_create


def hold_call_at(cloud, tmp: Path, call: str) -> None:
    """The next rental's engine holds when it calls `call` ("module:function"); later rentals run free."""
    folder = hold_dir(tmp)
    original = cloud.fake.on_create
    plan = [call]

    def on_create(instance_id, env, public_key):
        if plan:
            env = dict(env, PYTHONPATH=str(folder), **{HOLD_CALL_ENV: plan.pop()})
        return original(instance_id, env, public_key)

    cloud.fake.on_create = on_create


def held_in_call(cloud, instance_id: str) -> bool:
    return instance_id in cloud.host.servers and any(cloud.host.workdir(instance_id).rglob("held-call"))


def held(cloud, instance_id: str) -> int | None:
    """The step the engine on `instance_id` is held at, once it is there."""
    if instance_id not in cloud.host.servers:
        return None
    for marker in cloud.host.workdir(instance_id).rglob("held-[0-9]*"):
        return int(marker.name.split("-", 1)[1])
    return None
