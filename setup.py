"""The import package is the `lorarun/` folder. Its `runner`, `provider_adapters` and `image` entries are symbolic
links to the charter's top-level folders (DESIGN.md, "The house"), so every module sits on disk at its import path:
`lorarun/image/schema.py` is `lorarun.image.schema`, for Python, for pip and for every static tool (ruff, mypy,
import-linter) alike, with no `package_dir` mapping for them to misunderstand. Nothing named `runner` or `image`
ever reaches site-packages.

Every folder is listed, data-only ones too (image/assets/…, image/instance/startup): setuptools warns, folder by
folder, about any importable-looking folder it ships as data without it being a package.
"""

from setuptools import find_namespace_packages, setup

DATA_FILES = ["*.json", "*.txt", "*.txt.gz", "*.md", "*.sh", "*.conf", "LICENSE*", "*.html", "*.js", "*.css", "*.svg"]

# find_namespace_packages walks symbolic links (os.walk(followlinks=True)).
packages = ["lorarun"] + [f"lorarun.{sub}" for sub in find_namespace_packages("lorarun", exclude=["*__pycache__*"])]

setup(
    packages=packages,
    package_data=dict.fromkeys(packages, DATA_FILES),
    include_package_data=False,  # package_data says exactly what ships (no stray files from the working tree)
)
