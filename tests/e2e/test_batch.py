"""`lorarun submit a.yaml b.yaml`: several jobs, one rental, each job's outputs home as it finishes."""

from __future__ import annotations

import pytest
from helpers_dataset import make_dataset

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def _job(folder, name, provider):
    folder.mkdir()
    make_dataset(folder / "data", {"2_thing": 2})
    job = folder / "job.yaml"
    job.write_text(f"""
name: {name}
model: {{base: "builtin:tiny-sd15"}}
dataset: {{path: data, resolution: 64, min_bucket_reso: 32, max_bucket_reso: 128, bucket_reso_steps: 16}}
training: {{epochs: 1, batch_size: 2, network_dim: 4, network_alpha: 2, optimizer: AdamW, mixed_precision: "no"}}
sample: {{prompts: [], steps: 2}}
resources: {{provider: {provider}, disk_gb: 20}}
output: {{dir: out, name: {name}}}
""")
    return job


def test_two_jobs_share_one_rental(vast_cloud, tmp_path, capsys):
    a = _job(tmp_path / "a", "alpha", vast_cloud.name)
    b = _job(tmp_path / "b", "beta", vast_cloud.name)
    code = main(["submit", str(a), str(b), "--yes"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "a" / "out" / "alpha.safetensors").is_file()
    assert (tmp_path / "b" / "out" / "beta.safetensors").is_file()
    states = JobStore().all()
    assert len(states) == 2
    assert len({s.instance_id for s in states}) == 1  # one rental for both
    assert all(s.phase == "done" and s.instance_destroyed for s in states)
    creates = [r for r in vast_cloud.fake.requests if r.method == "PUT" and "/asks/" in r.path]
    assert len(creates) == 1
    assert vast_cloud.instance_ids() == []
