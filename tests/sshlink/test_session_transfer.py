"""SSHTransport uploads and downloads: sha256 manifest, skip, resume, atomic rename, verification, progress."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lorarun.sshlink.errors import RemoteError
from lorarun.sshlink.sftp_io import PART_SUFFIX
from lorarun.sshlink.transport import REMOTE_WORKDIR_EXPR


def _make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "10_concept/a.jpg": os.urandom(3_000_000),
        "10_concept/a.txt": b"a photo of sks dog",
        "10_concept/b.png": os.urandom(700_000),
        "10_concept/empty.txt": b"",
        "5_reg/deep/er/c.webp": os.urandom(40_000),
        "job.yaml": b"name: demo\n",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def _remote_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_put_tree_uploads_everything_with_a_manifest(ssh_transport, sshd_server, tmp_path):
    files = _make_tree(tmp_path / "ds")
    calls: list[tuple[int, int]] = []
    report = ssh_transport.put_tree(
        tmp_path / "ds", str(sshd_server.workdir / "job" / "dataset"), progress=lambda d, t: calls.append((d, t))
    )
    remote_root = sshd_server.workdir / "job" / "dataset"
    assert _remote_tree(remote_root) == files  # no partial files left behind either
    assert (report.files_sent, report.files_skipped) == (len(files), 0)
    assert report.bytes_sent == sum(len(b) for b in files.values())
    assert sorted(report.manifest) == sorted((rel, _sha(b), len(b)) for rel, b in files.items())
    total = sum(len(b) for b in files.values())
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_put_tree_skips_identical_files_and_resends_changed_ones(ssh_transport, sshd_server, tmp_path):
    files = _make_tree(tmp_path / "ds")
    remote = str(sshd_server.workdir / "ds")
    ssh_transport.put_tree(tmp_path / "ds", remote)
    again = ssh_transport.put_tree(tmp_path / "ds", remote)
    assert (again.files_sent, again.files_skipped, again.bytes_sent) == (0, len(files), 0)

    (tmp_path / "ds" / "10_concept" / "a.txt").write_bytes(b"a photo of sks cat")
    changed = ssh_transport.put_tree(tmp_path / "ds", remote)
    assert (changed.files_sent, changed.bytes_sent) == (1, len(b"a photo of sks cat"))
    assert (sshd_server.workdir / "ds" / "10_concept" / "a.txt").read_bytes() == b"a photo of sks cat"


def test_put_tree_resumes_a_partial_upload_from_its_size(ssh_transport, sshd_server, tmp_path):
    files = _make_tree(tmp_path / "ds")
    remote_root = sshd_server.workdir / "ds"
    (remote_root / "10_concept").mkdir(parents=True)
    big = files["10_concept/a.jpg"]
    (remote_root / "10_concept" / ("a.jpg" + PART_SUFFIX)).write_bytes(big[:1_234_567])
    report = ssh_transport.put_tree(tmp_path / "ds", str(remote_root))
    assert report.bytes_sent == sum(len(b) for b in files.values()) - 1_234_567
    assert _remote_tree(remote_root) == files


def test_put_tree_rewrites_a_partial_whose_prefix_differs(ssh_transport, sshd_server, tmp_path):
    files = _make_tree(tmp_path / "ds")
    remote_root = sshd_server.workdir / "ds"
    (remote_root / "10_concept").mkdir(parents=True)
    big = files["10_concept/a.jpg"]
    (remote_root / "10_concept" / ("a.jpg" + PART_SUFFIX)).write_bytes(b"X" + big[1:1_000_000])
    report = ssh_transport.put_tree(tmp_path / "ds", str(remote_root))
    assert report.bytes_sent == sum(len(b) for b in files.values())
    assert _remote_tree(remote_root) == files


def test_put_tree_replaces_a_truncated_remote_file(ssh_transport, sshd_server, tmp_path):
    files = _make_tree(tmp_path / "ds")
    remote_root = sshd_server.workdir / "ds"
    ssh_transport.put_tree(tmp_path / "ds", str(remote_root))
    target = remote_root / "10_concept" / "b.png"
    target.write_bytes(files["10_concept/b.png"][:1000])
    report = ssh_transport.put_tree(tmp_path / "ds", str(remote_root))
    assert (report.files_sent, report.bytes_sent) == (1, 700_000)
    assert target.read_bytes() == files["10_concept/b.png"]


def test_put_tree_into_the_workdir_expression(ssh_transport, sshd_server, tmp_path):
    files = _make_tree(tmp_path / "ds")
    ssh_transport.put_tree(tmp_path / "ds", f"{REMOTE_WORKDIR_EXPR}/job7/dataset")
    assert _remote_tree(sshd_server.workdir / "job7" / "dataset") == files


def test_put_tree_of_a_missing_folder_fails_before_connecting(ssh_transport, tmp_path):
    with pytest.raises(FileNotFoundError):
        ssh_transport.put_tree(tmp_path / "nope", "/tmp/x")


def test_put_file_is_atomic_and_creates_parents(ssh_transport, sshd_server, tmp_path):
    src = tmp_path / "cfg.json"
    src.write_bytes(b'{"steps": 10}')
    dest = sshd_server.workdir / "j" / "conf" / "engine.json"
    ssh_transport.put_file(src, str(dest))
    assert dest.read_bytes() == b'{"steps": 10}'
    assert not dest.with_name("engine.json" + PART_SUFFIX).exists()


def test_get_file_downloads_and_reports_progress(ssh_transport, sshd_server, tmp_path):
    data = os.urandom(5_000_000)
    (sshd_server.workdir / "out.safetensors").write_bytes(data)
    calls = []
    dest = tmp_path / "home" / "out.safetensors"
    ssh_transport.get_file(
        str(sshd_server.workdir / "out.safetensors"), dest, progress=lambda d, t: calls.append((d, t))
    )
    assert dest.read_bytes() == data
    assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data))
    assert not dest.with_name(dest.name + PART_SUFFIX).exists()


def test_get_file_resumes_a_partial_download(ssh_transport, sshd_server, tmp_path):
    data = os.urandom(3_000_000)
    (sshd_server.workdir / "ckpt.safetensors").write_bytes(data)
    dest = tmp_path / "ckpt.safetensors"
    dest.with_name(dest.name + PART_SUFFIX).write_bytes(data[:1_000_000])
    calls = []
    ssh_transport.get_file(str(sshd_server.workdir / "ckpt.safetensors"), dest, progress=lambda d, t: calls.append(d))
    assert dest.read_bytes() == data
    assert calls[0] == 1_000_000, "the bytes already home are not fetched again"


def test_get_file_restarts_when_the_partial_is_not_a_prefix(ssh_transport, sshd_server, tmp_path):
    data = os.urandom(2_000_000)
    (sshd_server.workdir / "ckpt.safetensors").write_bytes(data)
    dest = tmp_path / "ckpt.safetensors"
    dest.with_name(dest.name + PART_SUFFIX).write_bytes(b"garbage" * 1000)
    calls = []
    ssh_transport.get_file(str(sshd_server.workdir / "ckpt.safetensors"), dest, progress=lambda d, t: calls.append(d))
    assert dest.read_bytes() == data
    assert calls[0] == 0


def test_get_file_checks_the_expected_sha256(ssh_transport, sshd_server, tmp_path):
    (sshd_server.workdir / "x.bin").write_bytes(b"payload")
    dest = tmp_path / "x.bin"
    with pytest.raises(RemoteError, match="sha256"):
        ssh_transport.get_file(str(sshd_server.workdir / "x.bin"), dest, sha256="0" * 64)
    assert not dest.exists()
    ssh_transport.get_file(str(sshd_server.workdir / "x.bin"), dest, sha256=_sha(b"payload"))
    assert dest.read_bytes() == b"payload"


def test_get_file_of_a_missing_file_raises(ssh_transport, sshd_server, tmp_path):
    with pytest.raises(FileNotFoundError):
        ssh_transport.get_file(str(sshd_server.workdir / "missing"), tmp_path / "m")


def test_read_bytes_and_exists(ssh_transport, sshd_server):
    events = sshd_server.workdir / "events.jsonl"
    assert ssh_transport.read_bytes(str(events)) is None
    assert not ssh_transport.exists(str(events))
    events.write_bytes(b'{"step": 1}\n{"step": 2}\n')
    assert ssh_transport.exists(str(events))
    assert ssh_transport.read_bytes(str(events)) == b'{"step": 1}\n{"step": 2}\n'
    assert ssh_transport.read_bytes(str(events), 12) == b'{"step": 2}\n'
    assert ssh_transport.read_bytes(str(events), 10_000) == b""
    assert ssh_transport.exists(f"{REMOTE_WORKDIR_EXPR}/events.jsonl")


def test_put_tree_handles_odd_names_and_empty_folders(ssh_transport, sshd_server, tmp_path):
    src = tmp_path / "odd"
    (src / "10_é concept").mkdir(parents=True)
    (src / "10_é concept" / "a b'c\".jpg").write_bytes(b"\xff\xd8 jpeg")
    (src / "empty-dir").mkdir()
    report = ssh_transport.put_tree(src, str(sshd_server.workdir / "odd ds"))
    assert report.files_sent == 1
    assert (sshd_server.workdir / "odd ds" / "10_é concept" / "a b'c\".jpg").read_bytes() == b"\xff\xd8 jpeg"
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert ssh_transport.put_tree(empty, str(sshd_server.workdir / "nothing")).manifest == ()
    assert (sshd_server.workdir / "nothing").is_dir()
