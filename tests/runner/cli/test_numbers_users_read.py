"""The numbers a user reads (issue 23.8): CPU time on a CPU, a stopped job reported and shown as `stopped`, every
configuration error exit 2, `--debug` anywhere on the line, help text in words rather than Python types."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from helpers_dataset import make_dataset, write_job

from lorarun.runner.cli.app import main
from lorarun.runner.run.report import summary_lines
from lorarun.runner.state import JobState, JobStore


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ended_job(
    tmp_path: Path, *, provider: str, gpu: str, outcome: str, checkpoint: bool = True, legacy: bool = False
) -> JobState:
    """A job as the pipeline leaves it: a state file through teardown, report.json and a checkpoint home.
    `legacy`: a stopped job's state as written before the `stopped` phase existed (`done`, the report says why)."""
    out = tmp_path / "out"
    out.mkdir()
    store = JobStore()
    state = store.create(
        JobState(
            job_id="mychar-0000aa",
            name="mychar",
            job_file=str(tmp_path / "job.yaml"),
            provider=provider,
            output_dir=str(out),
        )
    )
    ended = "stopped" if outcome == "stopped" and not legacy else "done"
    for phase in ("provision", "wait", "upload", "run", "monitor", "finish", "teardown", ended):
        state = store.advance(state, phase)
    state = store.update(
        state, gpu=gpu, instance_id="i-1", instance_destroyed=True, message="stopped by `lorarun down`"
    )
    if checkpoint:
        (out / "mychar-000001.safetensors").write_bytes(b"x")
    report = {
        "job_id": state.job_id,
        "outcome": outcome,
        "stop_reason": "stopped by `lorarun down`" if outcome == "stopped" else None,
        "training": {"steps": 41, "total_steps": 82},
        "cost": {"actual": 0.12, "predicted": 0.2, "difference_fraction": -0.4},
    }
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return state


def test_a_cpu_run_on_this_machine_is_cpu_time_not_gpu_time_billed(tmp_path):
    state = ended_job(tmp_path, provider="local", gpu="CPU (2 cores)", outcome="finished")
    lines = summary_lines(state, Path(state.output_dir), "mychar", now=time.time())
    timing = next(line for line in lines if line.startswith("time"))
    assert "CPU time, not billed by a provider" in timing and "GPU" not in timing


def test_a_rented_gpu_is_gpu_time_billed(tmp_path):
    state = ended_job(tmp_path, provider="vastai", gpu="RTX 4090", outcome="finished")
    timing = next(line for line in summary_lines(state, Path(state.output_dir), "mychar") if line.startswith("time"))
    assert "on the instance (GPU time billed)" in timing


def test_the_estimate_on_a_cpu_speaks_of_memory_not_vram(tmp_path, capsys):
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data", "resources:\n  provider: local\n")
    code, out, err = run(capsys, "estimate", str(job))
    assert code == 0, err
    title = out.splitlines()[0]
    assert "GB memory (CPU)" in title and "VRAM" not in title


def test_a_stopped_job_is_shown_as_stopped_with_its_checkpoint_and_progress(tmp_path, capsys):
    state = ended_job(tmp_path, provider="vastai", gpu="RTX 4090", outcome="stopped")
    assert JobStore().load(state.job_id).phase == "stopped"
    code, out, _ = run(capsys, "status")
    assert code == 0 and re.search(r"mychar-0000aa.*stopped", out) and " done " not in out
    code, out, _ = run(capsys, "status", state.job_id)
    assert "phase stopped" in out
    lines = summary_lines(state, Path(state.output_dir), "mychar")
    assert any("last checkpoint home:" in line and "mychar-000001.safetensors" in line for line in lines)
    assert "steps   41 of 82 (stopped by `lorarun down`)" in lines
    assert any(line.startswith("cost") and "$0.12" in line for line in lines)


def test_a_stopped_job_recorded_as_done_before_the_phase_existed_reads_as_stopped(tmp_path, capsys):
    state = ended_job(tmp_path, provider="vastai", gpu="RTX 4090", outcome="stopped", legacy=True)
    assert json.loads((JobStore().job_dir(state.job_id) / "state.json").read_text())["phase"] == "done"
    loaded = JobStore().load(state.job_id)
    assert loaded.phase == "stopped" and loaded.is_final
    code, out, _ = run(capsys, "status")
    assert code == 0 and re.search(r"mychar-0000aa.*stopped", out)


def test_down_on_a_job_that_already_ended_says_how_it_ended(tmp_path, capsys):
    state = ended_job(tmp_path, provider="local", gpu="CPU (2 cores)", outcome="stopped")
    from lorarun.runner.run.reattach import print_ended

    print_ended(JobStore().load(state.job_id), "mychar")
    out = capsys.readouterr().out
    assert f"{state.job_id}: stopped" in out and "last checkpoint home" in out and "steps   41 of 82" in out


def test_a_finished_job_is_still_done(tmp_path, capsys):
    ended_job(tmp_path, provider="local", gpu="CPU (2 cores)", outcome="finished")
    _, out, _ = run(capsys, "status")
    assert re.search(r"mychar-0000aa.*done", out) and "stopped" not in out.replace("stopped by", "")


@pytest.mark.parametrize("command", [["estimate"], ["submit", "--yes"], ["gc"]])
def test_provider_ssh_without_a_host_is_a_configuration_error(tmp_path, capsys, command):
    make_dataset(tmp_path / "data", {"10_x": 2})
    job = write_job(tmp_path / "job.yaml", "data")
    args = [command[0], *([] if command[0] == "gc" else [str(job)]), "--provider", "ssh", *command[1:]]
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert "ssh_host" in err and "Traceback" not in err


def test_debug_is_accepted_after_the_command(tmp_path, capsys):
    code, _, err = run(capsys, "validate", str(tmp_path / "missing.yaml"), "--debug")
    assert code == 2
    assert "job file not found" in err and "Traceback" in err  # the flag was read, not refused
    code, _, err = run(capsys, "--debug", "validate", str(tmp_path / "missing.yaml"))
    assert code == 2 and "Traceback" in err


@pytest.mark.parametrize("command", ["submit", "estimate", "validate", "gc", "status", "logs", "down", "attach"])
def test_help_text_has_no_python_types(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert not re.search(r"<(bool|str|int|float|path|list\[[^\]]*\])>", out), out
