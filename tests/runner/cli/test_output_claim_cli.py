"""#24 at the command line, before anything runs: `validate` warns about files another job writes or an earlier
run left, and `submit` refuses them in one line (exit 2, no job recorded); `--out` with several jobs still says how."""

from __future__ import annotations

from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.job.output_claim import OutputClaims, OutputTarget
from lorarun.runner.state import JobStore


def test_validate_warns_and_submit_refuses_an_earlier_runs_files(tmp_path, capsys):
    job = tiny_job(tmp_path, "local")
    out = tmp_path / "out"
    out.mkdir()
    (out / "e2e_lora.safetensors").write_bytes(b"the LoRA someone paid for")

    assert main(["validate", str(job)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "e2e_lora.safetensors is an earlier run's output" in err and "--overwrite" in err

    assert main(["submit", str(job), "--yes"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--out auto" in lines[0], err
    assert JobStore().all() == []  # refused before a job was even recorded, let alone rented
    assert (out / "e2e_lora.safetensors").read_bytes() == b"the LoRA someone paid for"
    assert not list(OutputClaims().folder.glob("*.json"))  # the refused submit let go of its claim


def test_validate_names_the_job_writing_there(tmp_path, capsys):
    job = tiny_job(tmp_path, "local")
    claims = OutputClaims()
    claim = claims.take(OutputTarget((tmp_path / "out").resolve(), "e2e_lora"), command="submit", job_file="/x.yaml")
    try:
        assert main(["validate", str(job)]) == 0
        err = capsys.readouterr().err
        assert "is being written by" in err and "/x.yaml" in err
        assert main(["submit", str(job), "--yes"]) == 2
        assert "is being written by" in capsys.readouterr().err
    finally:
        claims.release(claim)
