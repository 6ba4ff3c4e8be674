"""Maps the repository's top-level folders into one import namespace, `lorarun.*`.

DESIGN.md keeps `runner/`, `provider_adapters/` and `image/` at the top of the tree; installing them as top-level
packages would put modules named `runner` and `image` into site-packages, so each folder becomes a sub-package
of `lorarun` instead. Sub-packages are discovered, so a new folder needs no edit here.
"""
from setuptools import find_packages, setup

FOLDERS = {
    "lorarun.runner": "runner",
    "lorarun.provider_adapters": "provider_adapters",
    "lorarun.image": "image",
}

packages = ["lorarun"]
for package, folder in FOLDERS.items():
    packages += [package] + [f"{package}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir={"lorarun": "lorarun", **FOLDERS},
    package_data={"lorarun.image": ["assets/**/*", "assets/*"], "lorarun.runner": ["calibration_table.json"]},
    include_package_data=True,
)
