"""#15 points 3 and 7 at the scan: what it accepts is exactly what gets uploaded; symlinks are followed only to a
regular image or caption file (and reported); a symlinked sub-folder is scanned like any other; absurd repeat
counts and decompression bombs are per-file errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from helpers_dataset import make_dataset, make_image

from lorarun.image.buckets import BucketSpec
from lorarun.image.dataset_scan import scan_dataset

SPEC = BucketSpec((64, 64), min_size=32, max_size=128, steps=16)


def _rels(scan, reg: bool = False) -> list[str]:
    return [f.rel for f in scan.files(reg=reg)]


def test_files_are_the_accepted_images_and_their_captions_only(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 2})
    (root / ".env").write_text("VAST_API_KEY=secret\n")
    (root / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (root / "10_x" / ".env").write_text("TOKEN=secret\n")
    (root / "10_x" / "notes.md").write_text("private notes\n")
    (root / "10_x" / "orphan.txt").write_text("a caption without an image\n")
    (root / "10_x" / "sub").mkdir()
    make_image(root / "10_x" / "sub" / "nested.png")  # kohya does not descend: neither do we
    make_image(root / "10_x" / "nocaption.png")
    scan = scan_dataset(root, SPEC)
    assert not scan.errors
    assert _rels(scan) == [
        "10_x/img_000.png",
        "10_x/img_000.txt",
        "10_x/img_001.png",
        "10_x/img_001.txt",
        "10_x/nocaption.png",
    ]
    assert all(f.path == root / f.rel for f in scan.files())


def test_regularisation_files_are_listed_separately(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1})
    reg = make_dataset(tmp_path / "reg", {"1_person": 1}, captions=False)
    (reg / "secret.txt").write_text("no")
    scan = scan_dataset(root, SPEC, reg_root=reg)
    assert _rels(scan) == ["10_x/img_000.png", "10_x/img_000.txt"]
    assert _rels(scan, reg=True) == ["1_person/img_000.png"]
    assert scan.files(reg=True)[0].path == reg / "1_person" / "img_000.png"


def test_a_caption_linked_to_a_config_file_is_an_error_and_not_listed(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 2})
    config = tmp_path / "config.toml"
    config.write_text('vast_api_key = "secret"\n')
    (root / "10_x" / "img_000.txt").unlink()
    (root / "10_x" / "img_000.txt").symlink_to(config)
    scan = scan_dataset(root, SPEC)
    (error,) = scan.errors
    assert error.path.endswith("img_000.txt") and "config.toml" in error.message and "not a caption" in error.message
    assert "10_x/img_000.txt" not in _rels(scan)


def test_links_to_real_images_and_captions_are_followed_and_reported(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1})
    elsewhere = make_dataset(tmp_path / "elsewhere", {"pics": 1})
    (root / "10_x" / "linked.png").symlink_to(elsewhere / "pics" / "img_000.png")
    (root / "10_x" / "linked.txt").symlink_to(elsewhere / "pics" / "img_000.txt")
    scan = scan_dataset(root, SPEC)
    assert not scan.errors
    reported = [w for w in scan.warnings if "symbolic link" in w.message]
    assert {Path(w.path).name for w in reported} == {"linked.png", "linked.txt"}
    assert "10_x/linked.png" in _rels(scan) and "10_x/linked.txt" in _rels(scan)
    linked = next(i for i in scan.subsets[0].images if i.path == "10_x/linked.png")
    assert linked.caption == "mychar, picture 0" and linked.caption_from_file


def test_links_to_anything_else_are_errors(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1})
    key = tmp_path / "id_rsa"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\n")
    (root / "10_x" / "key.png").symlink_to(key)
    (root / "10_x" / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (root / "10_x" / "folder.png").symlink_to(tmp_path)
    scan = scan_dataset(root, SPEC)
    assert sorted(Path(e.path).name for e in scan.errors) == ["dangling.jpg", "folder.png", "key.png"]
    assert _rels(scan) == ["10_x/img_000.png", "10_x/img_000.txt"]


def test_a_symlinked_sub_folder_is_scanned_and_listed_under_its_link_name(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1})
    elsewhere = make_dataset(tmp_path / "elsewhere", {"photos": 2})
    (elsewhere / "photos" / ".env").write_text("SECRET=1\n")
    (root / "5_linked").symlink_to(elsewhere / "photos")
    scan = scan_dataset(root, SPEC)
    assert not scan.errors
    assert any("5_linked" in w.path and "symbolic link" in w.message for w in scan.warnings)
    assert scan.num_train_images == 10 + 2 * 5
    assert [r for r in _rels(scan) if r.startswith("5_linked/")] == [
        "5_linked/img_000.png",
        "5_linked/img_000.txt",
        "5_linked/img_001.png",
        "5_linked/img_001.txt",
    ]
    # ... and the instance, which receives these files as plain files in a plain folder, sees the same dataset
    copy = tmp_path / "copy"
    for f in scan.files():
        (copy / f.rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / f.rel).write_bytes(f.path.read_bytes())
    again = scan_dataset(copy, SPEC)
    assert again.num_train_images == scan.num_train_images and not again.errors
    assert again.steps_per_epoch(1) == scan.steps_per_epoch(1)


def test_absurd_repeat_counts_are_errors_naming_the_folder(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1, "99999999999999999999_y": 1, "10001_z": 1})
    scan = scan_dataset(root, SPEC)
    assert sorted(Path(e.path).name for e in scan.errors) == ["10001_z", "99999999999999999999_y"]
    assert all("rename the folder" in e.message for e in scan.errors)
    assert scan.num_train_images == 10


def _png_header(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_is_a_per_file_error(tmp_path):
    root = make_dataset(tmp_path / "ds", {"10_x": 1})
    _png_header(root / "10_x" / "bomb.png", 65535, 65535)  # 4.3 Gpx
    _png_header(root / "10_x" / "wide.png", 20000, 10000)  # 200 Mpx: above Pillow's error threshold too
    scan = scan_dataset(root, SPEC)
    assert sorted(Path(e.path).name for e in scan.errors) == ["bomb.png", "wide.png"]
    assert all("Mpx" in e.message and "resize" in e.message for e in scan.errors)
    assert _rels(scan) == ["10_x/img_000.png", "10_x/img_000.txt"]
