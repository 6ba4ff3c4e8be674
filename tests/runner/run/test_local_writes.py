"""#27: which errors of the pull are this laptop's (the instance is kept), and the words the user reads."""

from __future__ import annotations

import errno
import json

from lorarun.image.destroy_plan import DestroyPlan
from lorarun.runner.run.fault_messages import pulled_so_far
from lorarun.runner.run.local_writes import describe, fix_advice, is_local_write_error
from lorarun.runner.run.outputs_home import duration_text, instance_grace_seconds
from lorarun.runner.run.stock_watchdog import watchdog_env


def test_local_write_errors_are_told_apart_from_sftp_ones():
    assert is_local_write_error(OSError(errno.EROFS, "Read-only file system"))  # never an SFTP status
    assert is_local_write_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_local_write_error(PermissionError(errno.EACCES, "Permission denied", "/out/x.safetensors"))
    assert not is_local_write_error(OSError(errno.EACCES, "Permission denied"))  # paramiko's: no file name
    assert not is_local_write_error(FileNotFoundError(errno.ENOENT, "No such file", "/out/x"))
    assert not is_local_write_error(ValueError("no"))


def test_advice_names_what_to_fix(tmp_path):
    ro = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "a"))
    assert describe(ro) == f"Read-only file system writing {tmp_path / 'a'}"
    assert "remount it read-write" in fix_advice(describe(ro), tmp_path)
    assert "free at least 2.0 MB" in fix_advice("No space left on device", tmp_path, 2_000_000)
    assert "writable" in fix_advice("Permission denied", tmp_path)


def test_pulled_so_far_says_nothing_was_pulled_when_nothing_was(tmp_path):
    job_dir, out = tmp_path / "job", tmp_path / "out"
    job_dir.mkdir()
    assert pulled_so_far(job_dir, out) == "nothing was pulled: no output had been saved yet"
    (job_dir / "events.jsonl").write_text(json.dumps({"event": "checkpoint", "path": "a.safetensors", "sha256": "0"}))
    assert pulled_so_far(job_dir, out) == "none of the 1 output(s) saved on the instance had been pulled yet"
    out.mkdir()
    (out / "a.safetensors").write_bytes(b"x")
    assert pulled_so_far(job_dir, out) == f"1 output(s) pulled so far are in {out}"


def test_the_grace_window_said_is_the_agents(tmp_path):
    assert instance_grace_seconds(tmp_path, 900.0) == 900.0  # no agent.json: the default
    (tmp_path / "agent.json").write_text(json.dumps({"grace_seconds": 30}))
    assert instance_grace_seconds(tmp_path, 900.0) == 30.0
    assert duration_text(30) == "30 s" and duration_text(900) == "15 min" and duration_text(10800) == "3.0 h"


def test_the_stock_watchdog_gets_the_create_calls_variables():
    plan = DestroyPlan(id_env="CONTAINER_ID", key_env="CONTAINER_API_KEY", ways=())
    env = watchdog_env("job-1", 1234.9, plan)
    assert env["LORARUN_JOB_ID"] == "job-1" and env["LORARUN_DEADLINE"] == "1234"
    joined = "".join(v for k, v in sorted(env.items()) if k.startswith("LORARUN_SELF_DESTRUCT_"))
    assert json.loads(joined)["key_env"] == "CONTAINER_API_KEY"  # the variable's name only, never a key
    assert watchdog_env("job-1", None, None) == {"LORARUN_JOB_ID": "job-1"}
