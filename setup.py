"""Maps the repository's top-level folders into one import namespace, `lorarun.*`.

DESIGN.md keeps `runner/`, `provider_adapters/` and `image/` at the top of the tree; installing them as top-level
packages would put modules named `runner` and `image` into site-packages, so each folder becomes a sub-package
of `lorarun` instead. Sub-packages are discovered, so a new folder needs no edit here.
"""
from setuptools import find_namespace_packages, find_packages, setup

FOLDERS = {
    "lorarun.runner": "runner",
    "lorarun.provider_adapters": "provider_adapters",
    "lorarun.image": "image",
}
DATA_FILES = ["*.json", "*.txt", "*.txt.gz", "*.md", "*.sh", "*.conf", "LICENSE*"]

# Every folder is listed, data-only ones too (image/assets/…, image/startup): setuptools warns, folder by folder,
# about any importable-looking folder it ships as data without it being a package — ~600 lines before `make demo`.
# `lorarun/` itself holds the neutral packages both sides import (e.g. `lorarun.sshlink`).
packages = ["lorarun"] + [f"lorarun.{sub}" for sub in find_packages("lorarun")]
for package, folder in FOLDERS.items():
    packages += [package] + [f"{package}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])]

setup(
    packages=packages,
    package_dir={"lorarun": "lorarun", **FOLDERS},
    package_data={package: DATA_FILES for package in packages},
    include_package_data=False,  # package_data says exactly what ships (no stray files from the working tree)
)
