"""Where a job's dataset goes on the instance (runner/run/shared_dataset.py): one copy per rental for jobs on the
same files, its own copy when it writes captions there or when the machine outlives the job."""

from __future__ import annotations

import os

from helpers_dataset import make_dataset

from lorarun.runner.job.validate import validate_job
from lorarun.runner.remote.layout import RemoteLayout
from lorarun.runner.run.shared_dataset import SHARED_DIR, dataset_key, remote_dataset_dir

JOB = """
name: {name}
model: {{base: "builtin:tiny-sd15"}}
dataset: {{path: "{data}", resolution: 64, min_bucket_reso: 32, max_bucket_reso: 128, bucket_reso_steps: 16{extra}}}
training: {{epochs: 1, batch_size: 2, network_dim: 4, network_alpha: 2, optimizer: AdamW, mixed_precision: "no"}}
resources: {{provider: local}}
output: {{dir: out-{name}, name: {name}}}
"""


def job(tmp_path, name, data, extra=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(JOB.format(name=name, data=data, extra=extra), encoding="utf-8")
    return validate_job(path)


def layout(job_id):
    return RemoteLayout(root=f"/workspace/lorarun/{job_id}", python="python3")


def test_two_jobs_on_one_folder_share_one_copy_on_a_rental(tmp_path):
    make_dataset(tmp_path / "data", {"2_thing": 2})
    a, b = job(tmp_path, "a", tmp_path / "data"), job(tmp_path, "b", tmp_path / "data")
    where_a = remote_dataset_dir(a, layout("a-1"), "vastai")
    assert where_a == remote_dataset_dir(b, layout("b-2"), "vastai")
    assert where_a == f"/workspace/lorarun/{SHARED_DIR}/{dataset_key(a)}"  # beside the job folders, not in one


def test_another_folder_or_an_edited_file_is_another_copy(tmp_path):
    make_dataset(tmp_path / "data", {"2_thing": 2})
    make_dataset(tmp_path / "other", {"2_thing": 2})
    a = job(tmp_path, "a", tmp_path / "data")
    assert dataset_key(a) != dataset_key(job(tmp_path, "b", tmp_path / "other"))
    before = dataset_key(a)  # the first job's upload; the user edits an image before the next job's
    image = next(p for p in (tmp_path / "data").rglob("*") if p.suffix in (".png", ".jpg"))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert dataset_key(job(tmp_path, "c", tmp_path / "data")) != before


def test_a_job_that_writes_captions_on_the_instance_keeps_its_own_copy(tmp_path):
    make_dataset(tmp_path / "data", {"2_thing": 2})
    captioning = job(tmp_path, "a", tmp_path / "data", extra=", captions: auto")
    assert remote_dataset_dir(captioning, layout("a-1"), "vastai") == layout("a-1").dataset


def test_nothing_is_shared_on_a_machine_that_outlives_the_job(tmp_path):
    make_dataset(tmp_path / "data", {"2_thing": 2})
    a = job(tmp_path, "a", tmp_path / "data")
    for provider in ("ssh", "local"):
        assert remote_dataset_dir(a, layout("a-1"), provider) == layout("a-1").dataset
