"""#15.3 end to end: `submit` uploads exactly what the scan accepted — over real SSH to a real sshd "instance" —
and nothing else that lies in or is linked from the dataset folder: no `.env`, no key, no file a symlink points
to unless it is a real image or caption. A symlinked sub-folder arrives as a plain folder and is trained on."""

from __future__ import annotations

import json

import pytest
from helpers_dataset import make_dataset
from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.run.shared_dataset import SHARED_DIR
from lorarun.runner.state import JobStore

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

SECRET = "sk-this-must-never-leave-the-laptop"


def test_only_scanned_files_reach_the_instance(vast_cloud, tmp_path, capsys):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1)
    data = tmp_path / "data"
    # Things that lie in the dataset folder and must stay home.
    (data / ".env").write_text(f"VAST_API_KEY={SECRET}\n")
    (data / "id_ed25519").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n")
    (data / "2_mychar" / ".env").write_text(f"TOKEN={SECRET}\n")
    (data / "2_mychar" / "notes.md").write_text(SECRET)
    secret_file = tmp_path / "home" / "secret.txt"
    secret_file.parent.mkdir()
    secret_file.write_text(SECRET)
    (data / "2_mychar" / "secret.txt").symlink_to(secret_file)  # a .txt, but the caption of no image
    # A sub-folder that is a symlink: scanned, uploaded as a plain folder, trained on.
    elsewhere = make_dataset(tmp_path / "elsewhere", {"pics": 2})
    (elsewhere / "pics" / ".env").write_text(SECRET)
    (data / "1_linked").symlink_to(elsewhere / "pics")

    code = main(["submit", str(job), "--yes"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1_linked" in err and "symbolic link" in err  # the link was reported

    (state,) = JobStore().all()
    # A rented machine keeps one copy of a dataset for the jobs of the rental that share it (shared_dataset.py).
    (remote_dataset,) = (vast_cloud.host.workdir(state.instance_id) / SHARED_DIR).iterdir()
    uploaded = sorted(p.relative_to(remote_dataset).as_posix() for p in remote_dataset.rglob("*") if p.is_file())
    assert uploaded == [
        "1_linked/img_000.png",
        "1_linked/img_000.txt",
        "1_linked/img_001.png",
        "1_linked/img_001.txt",
        "2_mychar/img_000.png",
        "2_mychar/img_000.txt",
        "2_mychar/img_001.png",
        "2_mychar/img_001.txt",
    ]
    assert not (remote_dataset / "1_linked").is_symlink()
    # The secret is nowhere on the instance, and the job's upload manifest lists exactly what went.
    for path in vast_cloud.host.workdir(state.instance_id).rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 5_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
    manifest = json.loads((JobStore().job_dir(state.job_id) / "upload_manifest.json").read_text())
    assert [f["path"] for f in manifest["dataset"]] == uploaded
    # The engine trained on both folders: 2 images × 2 repeats + 2 × 1, batch 2 → 3 steps in the one epoch.
    events_file = JobStore().job_dir(state.job_id) / "events.jsonl"
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    steps = [e for e in events if e.get("event") == "step"]
    assert steps and steps[-1]["total_steps"] == 3, steps
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()
