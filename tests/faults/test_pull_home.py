"""#11.5: outputs lost to a local failure. Before: a full disk during the pull ended `submit` with
`internal error: OSError`, destroyed the instance, and the final LoRA was gone; a pulled file that failed its
sha256 was never pulled again before the destroy. Now: retried where a retry helps; otherwise the instance is kept
for its grace window with a message saying what to fix, and `lorarun attach` finishes the pull."""

from __future__ import annotations

import errno
import json

import pytest
from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.sshlink import session, sftp_transfers

from .test_faults import assert_torn_down, only_state, submit

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

FINAL = "e2e_lora.safetensors"


def _disk_full_for(monkeypatch, name: str, times: int, fault) -> dict:
    """The laptop's disk is full while `name` is written: ENOSPC from the local write, `times` times."""
    real = sftp_transfers.download
    left = {"n": times}

    def download(sftp, rpath, sink, offset, size, on_bytes):
        if rpath.endswith("/" + name) and left["n"] > 0:
            left["n"] -= 1
            fault.inject("disk full (ENOSPC) while pulling the final LoRA")
            sink.write(b"\0" * min(size, 10))  # a few bytes made it, then the disk was full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(sftp, rpath, sink, offset, size, on_bytes)

    monkeypatch.setattr(sftp_transfers, "download", download)
    return left


def test_disk_full_for_a_moment_is_retried(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=2)
    fault.expected = "retried; everything home; destroyed"
    _disk_full_for(monkeypatch, FINAL, 2, fault)
    code = submit(job)
    assert code == 0, capsys.readouterr().err
    state = only_state()
    assert state.phase == "done"
    assert_torn_down(vast_cloud, state)
    assert (tmp_path / "out" / FINAL).is_file()
    fault.observe("exit 0, final LoRA home after retries, destroyed (confirmed)")


def test_disk_full_keeps_the_instance_and_attach_finishes_the_pull(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=2)
    fault.expected = "instance kept, told what to free; attach pulls; destroyed"
    left = _disk_full_for(monkeypatch, FINAL, 10_000, _Quiet(fault))
    fault.inject("disk full (ENOSPC) on every try of the final LoRA")
    code = submit(job, "--grace-seconds", "600")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "No space left on device" in err and "free at least" in err and "lorarun attach" in err
    state = only_state()
    assert not state.instance_destroyed and vast_cloud.instance_ids() == [state.instance_id]
    assert not list(vast_cloud.host.workdir(state.instance_id).rglob("collected"))  # its agent stays armed
    assert not (tmp_path / "out" / FINAL).exists()
    left["n"] = 0  # the user freed space
    code = main(["attach", state.job_id])
    err = capsys.readouterr().err
    assert code == 0, err
    state = only_state()
    assert state.phase == "done"
    assert_torn_down(vast_cloud, state)
    assert (tmp_path / "out" / FINAL).is_file()
    fault.observe("exit 1 with what to free; instance kept; attach brought the LoRA home; destroyed")


def test_local_corruption_after_the_pull_is_pulled_again(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=2)
    fault.inject("final LoRA corrupted on the laptop after its pull", "sha256 mismatch found, pulled again")
    real_get = session.SSHTransport.get_file
    done = {"n": 0}

    def get_file(self, remote, local, **kw):
        real_get(self, remote, local, **kw)
        if str(remote).endswith("/" + FINAL) and not done["n"]:
            done["n"] += 1
            data = bytearray(local.read_bytes())
            data[-1] ^= 0xFF  # a bit flipped on this disk
            local.write_bytes(bytes(data))

    monkeypatch.setattr(session.SSHTransport, "get_file", get_file)
    code = submit(job)
    assert code == 0, capsys.readouterr().err
    assert done["n"] == 1
    state = only_state()
    assert_torn_down(vast_cloud, state)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    checks = {f["path"]: f for f in report["files"]}
    assert report["verified"] and checks[FINAL]["ok"]  # verified against the manifest's sha256 after the re-pull
    fault.observe("mismatch found by verification, pulled again, exit 0, destroyed")


class _Quiet:
    """Count nothing for a permanent fault (it is injected once, above, not once per try)."""

    def __init__(self, fault):
        self.fault = fault

    def inject(self, *a, **k):
        pass
