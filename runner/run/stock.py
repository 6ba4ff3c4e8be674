"""The stock path (`resources.image: stock`): no Docker on the laptop, no image of our own.

The instance starts from the provider's stock PyTorch image; lorarun goes up as a wheel beside the dataset and is
pip-installed there (engine extra; torch comes with the image), with a pip cache in the job's work folder so that
a batch or a re-run on the same machine installs from it. The install then creates the same fixed entry points our
image has (/usr/local/bin/lorarun-python, lorarun-agent), so everything after it runs as usual. The estimate adds
`INSTALL_SECONDS` for the install.

The wheel is made from the running lorarun's own files (editable checkout or installed wheel alike), so what runs
on the instance is exactly what runs here.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib
import importlib.metadata as metadata
import io
import posixpath
import shlex
import zipfile
from pathlib import Path

STOCK = "stock"
# The provider's own PyTorch images. Vast's ssh run type injects sshd into any image; RunPod's runpod/pytorch images
# run sshd with PUBLIC_KEY themselves (reference/providers.md §1.3, §2.4).
STOCK_IMAGES = {
    "vastai": "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
    "runpod": "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04",
}
# pip installing diffusers, transformers, peft, accelerate, bitsandbytes (~300 MB of wheels) on a datacenter link.
INSTALL_SECONDS = 150.0
PACKAGES = ("lorarun", "lorarun.runner", "lorarun.provider_adapters", "lorarun.image")


def is_stock(image: str | None) -> bool:
    return (image or "").strip().lower() == STOCK


def stock_image(provider: str) -> str:
    """The image a stock job asks the provider for; LORARUN_STOCK_IMAGE overrides (another stock image)."""
    import os

    return os.environ.get("LORARUN_STOCK_IMAGE") or STOCK_IMAGES.get(provider, STOCK_IMAGES["vastai"])


# --- the wheel ------------------------------------------------------------------------------------------------
def build_wheel(dest_dir: Path) -> Path:
    """Write `lorarun-<version>-py3-none-any.whl` of the running lorarun into `dest_dir` and return its path."""
    dist = metadata.distribution("lorarun")
    version = dist.version
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        root = Path(importlib.import_module(package).__path__[0])
        arc_root = package.replace(".", "/")
        for path in sorted(root.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
                continue
            files[posixpath.join(arc_root, *path.relative_to(root).parts)] = path.read_bytes()
    info = f"lorarun-{version}.dist-info"
    meta = dist.metadata
    lines = [
        "Metadata-Version: 2.1",
        "Name: lorarun",
        f"Version: {version}",
        f"Summary: {_field(meta, 'Summary', '')}",
        f"Requires-Python: {_field(meta, 'Requires-Python', '>=3.11')}",
    ]
    lines += [f"Provides-Extra: {e}" for e in meta.get_all("Provides-Extra") or []]
    lines += [f"Requires-Dist: {r}" for r in dist.requires or []]
    files[f"{info}/METADATA"] = ("\n".join(lines) + "\n").encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: lorarun.runner.run.stock\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    files[f"{info}/RECORD"] = record.getvalue().encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    wheel = dest_dir / f"lorarun-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return wheel


# --- the install on the instance -------------------------------------------------------------------------------
def install_command(wheel: str, cache_dir: str) -> str:
    """A POSIX shell script that installs `wheel` (remote path) with the engine extra and prints the Python used.

    The stock image's Python is on the container's PATH only through its ENV (/opt/conda/bin in the PyTorch
    images), which an SSH session does not get: the script reads PATH from PID 1's environment (the container's
    own) and falls back to the usual places."""
    w, c, w_engine = shlex.quote(wheel), shlex.quote(cache_dir), shlex.quote(f"{wheel}[engine]")
    return f"""set -e
PY="${{LORARUN_PYTHON:-}}"
if [ -z "$PY" ]; then
  for dir in $(tr '\\0' '\\n' < /proc/1/environ 2>/dev/null | sed -n 's/^PATH=//p' | tr ':' ' ') /opt/conda/bin /usr/local/bin /usr/bin; do
    if [ -x "$dir/python3" ]; then PY="$dir/python3"; break; fi
  done
fi
if [ -z "$PY" ]; then echo "no python3 on this image: the stock path needs a PyTorch image" >&2; exit 3; fi
mkdir -p {c}
"$PY" -m pip install --disable-pip-version-check --cache-dir {c} --quiet {w_engine} >&2
"$PY" -m pip install --disable-pip-version-check --no-deps --force-reinstall --quiet {w} >&2
BIN="$(dirname "$PY")"
printf '#!/bin/sh\\nexec %s "$@"\\n' "$PY" > /usr/local/bin/lorarun-python && chmod 755 /usr/local/bin/lorarun-python
for tool in lorarun-engine lorarun-agent; do [ -x "$BIN/$tool" ] && ln -sf "$BIN/$tool" /usr/local/bin/$tool; done
/usr/local/bin/lorarun-python -c "import lorarun.image.engine.train" >&2
echo /usr/local/bin/lorarun-python"""


def _field(meta, key: str, default: str) -> str:
    """A metadata field or `default` (PackageMetadata declares no `get` before Python 3.12)."""
    return (meta[key] if key in meta else None) or default
