"""Installing lorarun is quiet (#12.7): every folder that ships files is a package, so setuptools has nothing to warn
about (it used to print ~600 lines of "Package '…assets.configs.sd15' is absent from the `packages` configuration"
before the demo's first line), and the data files the engine needs are in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from support.paths import REPO

ROOT = REPO


@pytest.mark.slow
def test_the_wheel_builds_without_package_data_warnings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 and "No module named pip" in proc.stderr:
        pytest.skip("pip is not installed in this environment")
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    assert "is absent from the `packages` configuration" not in log
    assert "as data is deprecated" not in log
    (wheel,) = tmp_path.glob("lorarun-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "lorarun/image/assets/configs/sd15/unet/config.json",
        "lorarun/image/assets/clip/bpe_simple_vocab_16e6.txt.gz",
        "lorarun/runner/price/calibration_table.json",
        "lorarun/image/checkpoint_probe.py",
        # `lorarun ui` works offline: its page ships in the package (runner/ui/static)
        "lorarun/runner/ui/static/index.html",
        "lorarun/runner/ui/static/app.js",
        "lorarun/runner/ui/static/app.css",
        "lorarun/runner/ui/static/favicon.svg",
    ):
        assert needed in names, needed
    assert not any("__pycache__" in n for n in names)
