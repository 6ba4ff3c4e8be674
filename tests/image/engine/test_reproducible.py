"""Same seed, same machine: the same run (#12.7). Two engine processes with the same config — separate work folders
(no shared latent cache) and different PYTHONHASHSEEDs — log the same losses and save bit-identical LoRA tensors;
only the run's own metadata (timestamps, session id) differs. The README's reproducibility note relies on this."""

from __future__ import annotations

import os
import subprocess

import pytest

torch = pytest.importorskip("torch")

from .engine_helpers import engine_cmd, engine_config, engine_env, read_events, write_config  # noqa: E402

pytestmark = pytest.mark.slow


def _run(tmp_path, dataset, hash_seed: str):
    tmp_path.mkdir()
    cfg = write_config(tmp_path, engine_config(tmp_path, dataset, training={"seed": 42}))
    env = {**engine_env(), "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run(engine_cmd(cfg), capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp_path / "out"


def test_two_runs_with_one_seed_are_identical(tmp_path, dataset):
    from safetensors import safe_open
    from safetensors.torch import load_file

    a = _run(tmp_path / "a", dataset, "1")
    b = _run(tmp_path / "b", dataset, "2")
    losses = [[e["loss"] for e in read_events(out) if e["event"] in ("step", "epoch")] for out in (a, b)]
    assert losses[0] and losses[0] == losses[1]
    ta, tb = load_file(str(a / "tiny.safetensors")), load_file(str(b / "tiny.safetensors"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    with safe_open(str(a / "tiny.safetensors"), "pt") as fa, safe_open(str(b / "tiny.safetensors"), "pt") as fb:
        ma, mb = fa.metadata(), fb.metadata()
    differing = {k for k in ma if ma[k] != mb.get(k)}
    assert differing <= {
        "ss_training_started_at",
        "ss_training_finished_at",
        "ss_session_id",
        "modelspec.date",
        "ss_training_comment",
    }, differing
    # The grid is rendered with its k/n progress reported on the way.
    grid = [e for e in read_events(a) if e["event"] == "progress" and e["phase"] == "sampling_grid"]
    assert grid and grid[-1]["done"] == grid[-1]["total"] == 2
    assert os.path.exists(a / "tiny_grid.png")
