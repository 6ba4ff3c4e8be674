"""The README's demo, end to end on this machine: `lorarun submit jobs/demo.yaml` with the real engine on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "jobs" / "demo.yaml"


def test_demo_submit_trains_verifies_and_tears_down(tmp_path, capsys, lorarun_home):
    out = tmp_path / "out"
    code = main(["submit", str(DEMO), "--yes", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lora = out / "demo_lora.safetensors"
    assert lora.is_file()
    assert str(lora) in captured.out  # the user is told where it is
    assert (out / "demo_lora-000001.safetensors").is_file()  # save_every_n_epochs: 1
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.html").is_file()
    assert report["outcome"] == "finished" if "outcome" in report else True

    # kohya naming, the configured alpha, and the metadata A1111/ComfyUI read.
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
        alphas = {float(f.get_tensor(k)) for k in keys if k.endswith(".alpha")}
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in keys)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
    assert alphas == {4.0}
    assert meta["ss_network_dim"] == "8" and float(meta["ss_network_alpha"]) == 4.0
    assert meta["ss_base_model_version"] == "sd_v1"

    # It loads back into a diffusers pipeline of the same tiny model.
    from lorarun.image.engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd15")
    pipe.load_lora_weights(str(lora), adapter_name="demo")
    assert "demo" in pipe.get_list_adapters().get("unet", [])

    # The job's state says done, with the instance destroyed and confirmed; the staging folder is gone.
    (state,) = JobStore().all()
    assert state.phase == "done" and state.instance_destroyed
    assert not (lorarun_home / "local" / state.instance_id).exists()
    phases = [p for p, _ in state.history]
    assert phases[:7] == ["validate", "provision", "wait", "upload", "run", "monitor", "finish"]
    assert phases[-2:] == ["teardown", "done"]
