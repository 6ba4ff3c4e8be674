"""#27: the last ways to lose a LoRA, each against the fake provider with a real sshd instance and the real engine.

- The output folder turns read-only mid-job (a real read-only bind mount, as a remounted disk): before, removing a
  bad copy raised EROFS outside the local-error handling, the job ended `internal error: OSError` and the instance
  was destroyed with the final LoRA never home. Now the instance is kept for its grace window (the message gives
  the real window, not the default) and `attach` brings everything home once the folder is writable again.
- A checkpoint corrupt on the instance itself: the message says the instance's copy is bad and what is home,
  instead of "check the disk under …/out".
- A dataset file removed during the upload: which file vanished, and that nothing was lost.
- The link dropping while the instance checks the upload: reconnected and resumed; when it never comes back, "the
  connection dropped", never `remote verification exited -1` or paramiko's raw socket line.
"""

from __future__ import annotations

import pytest
from support.cloud import tiny_job

from lorarun.runner.cli.app import main
from lorarun.runner.run import upload
from lorarun.sshlink import session, sftp_io

from .test_faults import assert_torn_down, checkpoints, only_state, submit

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

ALL_THREE = ["e2e_lora-000001.safetensors", "e2e_lora-000002.safetensors", "e2e_lora.safetensors"]


def test_read_only_output_folder_keeps_the_instance_and_attach_brings_everything_home(
    vast_cloud, tmp_path, monkeypatch, capsys, fault, read_only_folder
):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=3)
    out = tmp_path / "out"
    folder = read_only_folder(out)
    fault.inject("output folder remounted read-only after the first checkpoint", "instance kept; attach pulls all")

    real_get = session.SSHTransport.get_file

    def get_file(self, remote, local, **kw):
        real_get(self, remote, local, **kw)
        if str(remote).endswith("/e2e_lora-000001.safetensors") and not get_file.done:
            get_file.done = True
            folder.engage()  # the first checkpoint is home; from now on the disk is read-only

    get_file.done = False
    monkeypatch.setattr(session.SSHTransport, "get_file", get_file)
    code = submit(job, "--grace-seconds", "60")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "internal error" not in err and "Read-only file system" in err
    assert "remount it read-write" in err and "lorarun attach" in err
    assert "about 60 s" in err and "15 min" not in err  # the window the agent really has (#27)
    state = only_state()
    assert not state.instance_destroyed and vast_cloud.instance_ids() == [state.instance_id]
    assert checkpoints(out) == ["e2e_lora-000001.safetensors"]

    code = main(["attach", state.job_id])  # still read-only: kept again, and attach gives the real window too
    err = capsys.readouterr().err
    assert code == 1 and "about 60 s" in err and "15 min" not in err, err
    assert vast_cloud.instance_ids() == [state.instance_id]

    folder.release()  # the user remounted the disk read-write
    code = main(["attach", state.job_id])
    err = capsys.readouterr().err
    assert code == 0, err
    state = only_state()
    assert state.phase == "done"
    assert_torn_down(vast_cloud, state)
    assert checkpoints(out) == ALL_THREE and (out / "report.html").is_file(), err
    fault.observe("exit 1 naming the read-only folder; kept (about 60 s); attach brought all 3 home; destroyed")


def test_a_checkpoint_corrupt_on_the_instance_is_said_so(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=2)
    fault.inject("a checkpoint corrupted on the instance's disk", "the instance's copy named as bad; what is home")
    fault.bad_at_the_source("e2e_lora-000001.safetensors")
    real_get = session.SSHTransport.get_file

    def get_file(self, remote, local, **kw):
        if str(remote).endswith("/e2e_lora-000001.safetensors") and not get_file.done:
            get_file.done = True  # the loopback instance's disk is this machine's: flip a byte there, once
            with open(remote, "r+b") as f:
                f.seek(-1, 2)
                last = f.read(1)
                f.seek(-1, 2)
                f.write(bytes([last[0] ^ 0xFF]))
        return real_get(self, remote, local, **kw)

    get_file.done = False
    monkeypatch.setattr(session.SSHTransport, "get_file", get_file)
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "the instance's copy is corrupt" in err and "check the disk" not in err
    assert "Home and verified" in err and "e2e_lora.safetensors" in err.split("Home and verified", 1)[1]
    state = only_state()
    assert_torn_down(vast_cloud, state)  # nothing to wait for: keeping it would not mend its copy
    fault.observe("exit 1: the instance's copy named as corrupt, the rest home and verified; destroyed")


def test_a_dataset_file_removed_during_the_upload_is_named(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1, images=6)
    victim = sorted((tmp_path / "data" / "2_mychar").glob("*.png"))[-1]
    fault.inject("a dataset image deleted while the upload runs", "which file vanished; nothing lost; destroyed")
    original = upload.transfer_bar

    import contextlib

    @contextlib.contextmanager
    def deleting_bar(description):
        with original(description) as progress:
            victim.unlink(missing_ok=True)  # after the scan accepted it, before the upload reads it
            yield progress

    monkeypatch.setattr(upload, "transfer_bar", deleting_bar)
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "internal error" not in err and "FileNotFoundError" not in err
    said = " ".join(err.split())  # the line as written, however the terminal wrapped it
    assert f"{victim} vanished from the dataset while it was being uploaded" in said, err
    assert "Nothing was lost: no training had started, and the instance is destroyed now, after about" in said
    assert_torn_down(vast_cloud, only_state())
    fault.observe("exit 1 naming the vanished image; nothing lost; destroyed")


def _drop_during_verification(monkeypatch, cloud, *, for_good: bool) -> dict:
    """The link drops while the instance hashes what was uploaded (StreamVerifier.results waits on it): once, or
    for good (the instance's sshd stops answering, as behind a dead route)."""
    real = sftp_io.StreamVerifier.results
    left = {"n": 1, "dropped": 0}

    def results(self):
        if left["n"] > 0:
            left["n"] -= 1
            instance_id = only_state().instance_id
            if for_good:
                cloud.host.servers[instance_id].stop()
                left["dropped"] = 1
            else:
                left["dropped"] += cloud.host.drop_connections(instance_id)
        return real(self)

    monkeypatch.setattr(sftp_io.StreamVerifier, "results", results)
    return left


def test_the_link_dropping_while_the_upload_is_checked_reconnects(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1)
    fault.inject("SSH dropped while the instance verifies the upload", "reconnects, resumes, finishes")
    left = _drop_during_verification(monkeypatch, vast_cloud, for_good=False)
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 0, err
    assert left["dropped"] > 0, "the test did not manage to cut the connection"
    assert "exited -1" not in err and "Socket exception" not in err
    assert_torn_down(vast_cloud, only_state())
    assert (tmp_path / "out" / "e2e_lora.safetensors").is_file()
    fault.observe("reconnected and resumed; exit 0; destroyed")


def test_the_link_never_coming_back_during_the_upload_says_so(vast_cloud, tmp_path, monkeypatch, capsys, fault):
    job = tiny_job(tmp_path, vast_cloud.name, epochs=1)
    fault.inject("SSH gone for good while the upload is checked", "'the connection dropped'; destroyed")
    left = _drop_during_verification(monkeypatch, vast_cloud, for_good=True)
    code = submit(job)
    err = capsys.readouterr().err
    assert code == 1, err
    assert left["dropped"] and "the connection dropped" in err
    assert "exited -1" not in err and "Socket exception" not in err and "internal error" not in err
    assert_torn_down(vast_cloud, only_state())
    fault.observe("exit 1 saying the connection dropped; destroyed")
