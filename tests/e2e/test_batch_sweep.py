"""`lorarun sweep SWEEP.yaml` end to end on the fake Vast.ai API (real sshd instances, the real engine on CPU): a
2×2 grid becomes four jobs with their own names and output folders, over two rentals; every LoRA comes home
verified, trained with its own settings and with the base's prompts and seeds (so the batch report's grids
compare); the shared dataset goes up once per rental; both instances are destroyed."""

from __future__ import annotations

import json

import pytest
from helpers_dataset import make_dataset
from support.batch_jobs import assert_dataset_uploaded_once_per_rental, assert_home_and_verified

from lorarun.runner.batch.record import BatchStore
from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

SWEEP = """
name: thing
model: {{base: "builtin:tiny-sd15"}}
dataset: {{path: data, resolution: 64, min_bucket_reso: 32, max_bucket_reso: 128, bucket_reso_steps: 16}}
training: {{epochs: 1, batch_size: 2, network_dim: 4, network_alpha: 2, optimizer: AdamW, mixed_precision: "no"}}
sample: {{prompts: ["a photo of thing"], seed: 7, grid_seeds: [3, 4], grid_strengths: [0.0, 1.0], steps: 2,
  width: 64, height: 64}}
resources: {{provider: {provider}, disk_gb: 20}}
output: {{dir: out, name: thing}}
sweep:
  rentals: 2
  grid: {{network_dim: [4, 8], learning_rate: [1.0e-4, 5.0e-5]}}
"""
VARIANTS = {  # name → (network_dim, learning_rate), in the grid's order
    "thing-dim4-lr0.0001": (4, 1e-4),
    "thing-dim4-lr5e-05": (4, 5e-5),
    "thing-dim8-lr0.0001": (8, 1e-4),
    "thing-dim8-lr5e-05": (8, 5e-5),
}


def test_a_grid_sweep_trains_every_variant_over_two_rentals(vast_cloud, tmp_path, capsys):
    make_dataset(tmp_path / "data", {"2_thing": 2})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP.format(provider=vast_cloud.name), encoding="utf-8")
    code = main(["sweep", str(sweep), "--yes"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    (record,) = BatchStore().all()
    assert record.sweep == str(sweep) and record.rentals == 2
    states = BatchStore().states(record)
    assert sorted(s.name for s in states) == sorted(VARIANTS)
    store = JobStore()
    for state in states:
        assert state.phase == "done" and state.instance_destroyed, state.message
        assert state.output_dir == str(tmp_path / "out" / state.name)  # each variant its own folder
        assert_home_and_verified(tmp_path, state)
        # What the instance was told to train: this variant's own settings, the base's prompts and seeds.
        sent = json.loads((store.job_dir(state.job_id) / "engine_config.json").read_text())
        assert (sent["training"]["network_dim"], sent["training"]["learning_rate"]) == VARIANTS[state.name]
        sample = sent["sample"]
        assert (sample["prompts"], sample["seed"], sample["grid_seeds"]) == (["a photo of thing"], 7, [3, 4])
        # And the grid at those prompts and seeds came home.
        assert list((tmp_path / "out" / state.name).rglob("*grid*.png")), state.name
    assert len({s.instance_id for s in states}) == 2
    assert len([r for r in vast_cloud.fake.requests if r.method == "PUT" and "/asks/" in r.path]) == 2
    assert vast_cloud.instance_ids() == []
    assert not any(vast_cloud.host.alive(s.instance_id) for s in states)
    assert_dataset_uploaded_once_per_rental(vast_cloud, tmp_path / "data", states)
    html = (store.home / "batches" / f"{record.batch_id}.html").read_text()
    assert all(f'data-job="{name}"' in html for name in VARIANTS)  # every variant's grid, one under another
