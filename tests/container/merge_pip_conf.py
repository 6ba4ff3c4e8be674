"""Merge this machine's pip settings (config files given as arguments, then PIP_* variables) into one pip.conf for
the test base image, written to stdout. Paths are rewritten to where build_base.sh copies things inside the image:
the CA bundle to /etc/ssl/certs/lorarun-host-ca.crt; file:// indexes of the host are dropped (they are not inside
the image); find-links and the constraints file keep their paths (build_base.sh copies them to the same place)."""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

IMAGE_CA = "/etc/ssl/certs/lorarun-host-ca.crt"


def main(root: str, *files: str) -> None:
    merged: dict[str, dict[str, str]] = {}
    for f in files:
        cp = configparser.ConfigParser(interpolation=None)
        cp.read(f)
        for section in cp.sections():
            merged.setdefault(section, {}).update(cp[section])
    for name, value in os.environ.items():  # pip's env form: PIP_FIND_LINKS -> global.find-links
        if name.startswith("PIP_") and name not in ("PIP_CONFIG_FILE",):
            merged.setdefault("global", {})[name[4:].lower().replace("_", "-")] = value
    out = configparser.ConfigParser(interpolation=None)
    for section, items in merged.items():
        kept = {}
        for key, value in items.items():
            if key == "cert":
                value = IMAGE_CA
            elif key in ("extra-index-url", "index-url"):
                value = " ".join(u for u in value.split() if not u.startswith("file:"))
            elif key in ("find-links", "constraint"):
                value = " ".join(p for p in value.split() if (Path(root) / p.lstrip("/")).exists())
            if value:
                kept[key] = value
        if kept:
            out[section] = kept
    out.write(sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:])
