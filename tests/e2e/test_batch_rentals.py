"""`lorarun submit JOB... --rentals N`: eight jobs over three rentals side by side on the fake Vast.ai API (real
sshd instances, the real engine on CPU): every LoRA home and verified, every instance destroyed and confirmed gone.
The wall-time ratio (batch ÷ longest job) is measured by bench/batch_wall.py, never asserted here."""

from __future__ import annotations

import json

import pytest
from helpers_dataset import make_dataset

from lorarun.runner.batch.record import BatchStore
from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore
from lorarun.sshlink.sftp_io import sha256_file

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def batch_job(folder, name, provider, *, epochs=1, prompts="[]"):
    folder.mkdir(parents=True)
    make_dataset(folder / "data", {"2_thing": 2})
    job = folder / "job.yaml"
    job.write_text(f"""
name: {name}
model: {{base: "builtin:tiny-sd15"}}
dataset: {{path: data, resolution: 64, min_bucket_reso: 32, max_bucket_reso: 128, bucket_reso_steps: 16}}
training: {{epochs: {epochs}, batch_size: 2, network_dim: 4, network_alpha: 2, optimizer: AdamW, mixed_precision: "no"}}
sample: {{prompts: {prompts}, steps: 2, width: 64, height: 64}}
resources: {{provider: {provider}, disk_gb: 20}}
output: {{dir: out, name: {name}}}
""")
    return job


def eight_jobs(tmp_path, provider):
    """One long job and seven short ones: packed longest first, the long one has a rental to itself."""
    jobs = [batch_job(tmp_path / "long", "long", provider, epochs=4)]
    jobs += [batch_job(tmp_path / f"s{n}", f"short{n}", provider) for n in range(7)]
    return jobs


def assert_home_and_verified(tmp_path, state):
    out = tmp_path / state.output_dir
    final = out / f"{state.name}.safetensors"
    assert final.is_file(), state.message
    report = json.loads((out / "report.json").read_text())
    assert report["outcome"] == "finished"
    manifest = {f["path"]: f for f in report["files"]}
    assert manifest[final.name]["sha256"] == sha256_file(final)


def test_eight_jobs_over_three_rentals(vast_cloud, tmp_path, capsys):
    jobs = eight_jobs(tmp_path, vast_cloud.name)
    code = main(["submit", *map(str, jobs), "--rentals", "3", "--yes"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    (record,) = BatchStore().all()
    assert record.rentals == 3 and len(record.jobs) == 8
    states = BatchStore().states(record)
    assert all(s.phase == "done" and s.instance_destroyed for s in states), [s.message for s in states]
    for state in states:
        assert_home_and_verified(tmp_path, state)
    instances = {s.instance_id for s in states}
    assert len(instances) == 3  # three rentals, no more
    creates = [r for r in vast_cloud.fake.requests if r.method == "PUT" and "/asks/" in r.path]
    assert len(creates) == 3
    assert vast_cloud.instance_ids() == []  # destroyed at the provider...
    assert not any(vast_cloud.host.alive(i) for i in instances)  # ...and their sshd is gone
    # Longest first onto the least-loaded rental: the long job alone on its rental, the others spread over two.
    by_rental: dict[int, list[str]] = {}
    for job in record.jobs:
        by_rental.setdefault(job.rental, []).append(job.name)
    assert sorted(by_rental) == [1, 2, 3] and sum(map(len, by_rental.values())) == 8
    assert by_rental[1][0] == "long"  # the longest job goes first, onto rental 1
    assert len(by_rental[1]) == min(len(v) for v in by_rental.values())  # and its rental takes the fewest
    assert "batch report" in captured.out
    html = (JobStore().home / "batches" / f"{record.batch_id}.html").read_text()
    assert all(f">{s.name}<" in html for s in states)
