"""The explicit upload list (Transport.put_files) never writes outside its remote folder, nor twice to one place."""

from __future__ import annotations

import pytest

from lorarun.runner.remote.local import LocalTransport
from lorarun.sshlink.sftp_io import check_upload_list, local_files
from lorarun.sshlink.transport import LocalFile


@pytest.mark.parametrize("rel", ["../x.png", "/etc/x.png", "a/../../x.png", "", "a\\..\\x.png"])
def test_paths_that_leave_the_folder_are_refused(rel, tmp_path):
    with pytest.raises(ValueError, match="bad or repeated"):
        check_upload_list([LocalFile(rel, tmp_path / "f", 1)])


def test_a_path_given_twice_is_refused(tmp_path):
    with pytest.raises(ValueError):
        check_upload_list([LocalFile("a.png", tmp_path / "f", 1), LocalFile("a.png", tmp_path / "g", 1)])


def test_local_transport_sends_exactly_the_list(tmp_path):
    src = tmp_path / "src"
    (src / "10_x").mkdir(parents=True)
    for name in ("a.png", "a.txt", ".env", "b.png"):
        (src / "10_x" / name).write_text(name)
    linked = tmp_path / "elsewhere.png"
    linked.write_text("linked")
    (src / "10_x" / "c.png").symlink_to(linked)
    files = local_files((rel, src / rel) for rel in ("10_x/a.png", "10_x/a.txt", "10_x/c.png"))
    report = LocalTransport(tmp_path / "work").put_files(files, str(tmp_path / "dst"))
    got = sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*") if p.is_file())
    assert got == ["10_x/a.png", "10_x/a.txt", "10_x/c.png"]
    assert [m[0] for m in report.manifest] == ["10_x/a.png", "10_x/a.txt", "10_x/c.png"]
    assert (tmp_path / "dst" / "10_x" / "c.png").read_text() == "linked"
    assert not (tmp_path / "dst" / "10_x" / "c.png").is_symlink()
    again = LocalTransport(tmp_path / "work").put_files(files, str(tmp_path / "dst"))
    assert again.files_skipped == 3 and again.files_sent == 0
