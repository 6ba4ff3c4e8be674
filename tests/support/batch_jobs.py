"""The tiny jobs of the batch tests (e2e and faults): a real job file each, the tiny SD1.5-shaped model, a few
images, trained by the real engine on CPU behind a fake provider's real sshd instances."""

from __future__ import annotations

import json
from pathlib import Path

from helpers_dataset import make_dataset

from lorarun.runner.price.calibration_load import read_measurements
from lorarun.runner.run.shared_dataset import SHARED_DIR
from lorarun.sshlink.sftp_io import sha256_file


def batch_job(
    folder: Path, name: str, provider: str, *, epochs: int = 1, prompts: str = "[]", data: Path | None = None
):
    """A job file in `folder` named `name`. Its dataset is its own (`folder/data`) unless `data` names a folder
    several jobs share (the batch then uploads it once per rental)."""
    folder.mkdir(parents=True)
    if data is None:
        data = folder / "data"
        make_dataset(data, {"2_thing": 2})
    elif not data.exists():
        make_dataset(data, {"2_thing": 2})
    job = folder / "job.yaml"
    job.write_text(f"""
name: {name}
model: {{base: "builtin:tiny-sd15"}}
dataset: {{path: "{data}", resolution: 64, min_bucket_reso: 32, max_bucket_reso: 128, bucket_reso_steps: 16}}
training: {{epochs: {epochs}, batch_size: 2, network_dim: 4, network_alpha: 2, optimizer: AdamW, mixed_precision: "no"}}
sample: {{prompts: {prompts}, steps: 2, width: 64, height: 64}}
resources: {{provider: {provider}, disk_gb: 20}}
output: {{dir: out, name: {name}}}
""")
    return job


def batch_jobs(tmp_path: Path, provider: str, names, epochs=None, data: Path | None = None) -> list[str]:
    return [str(batch_job(tmp_path / n, n, provider, epochs=(epochs or {}).get(n, 1), data=data)) for n in names]


def assert_home_and_verified(tmp_path: Path, state) -> None:
    """The job's LoRA is in its output folder and matches the sha256 its report recorded on the instance."""
    out = tmp_path / state.output_dir
    final = out / f"{state.name}.safetensors"
    assert final.is_file(), state.message
    report = json.loads((out / "report.json").read_text())
    assert report["outcome"] == "finished"
    manifest = {f["path"]: f for f in report["files"]}
    assert manifest[final.name]["sha256"] == sha256_file(final)


def assert_dataset_uploaded_once_per_rental(cloud, data: Path, states) -> None:
    """Every job of a rental trains on the rental's one copy of the shared `data`: the first job sends the
    dataset's bytes, the next ones find every file already there and send none (the bytes each job's upload
    sent, as it measured them: calibration.jsonl), and no job folder on the instance holds a dataset of its own."""
    dataset_bytes = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    sent = {m.job_id: m.measured.upload_bytes for m in read_measurements()}
    by_instance: dict[str, list] = {}
    for state in states:
        by_instance.setdefault(state.instance_id, []).append(state)
    for instance, on_it in by_instance.items():
        per_job = [sent[s.job_id] for s in on_it]
        assert sum(per_job) == dataset_bytes, (instance, per_job, dataset_bytes)
        assert sorted(per_job)[:-1] == [0] * (len(per_job) - 1)  # one upload, the others sent nothing
        workdir = cloud.host.workdir(instance)
        copies = [p for p in (workdir / SHARED_DIR).iterdir() if p.is_dir()]
        assert len(copies) == 1, copies
        uploaded = sorted(p.relative_to(copies[0]).as_posix() for p in copies[0].rglob("*") if p.is_file())
        assert uploaded == sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
        assert not any((workdir / s.job_id / "dataset").exists() for s in on_it)
