"""Print the `[engine]` extra's requirements from pyproject.toml, one per line, for the image's dependency layer.

The Dockerfile installs these from pyproject.toml alone, before any source is copied, so that a code change does
not invalidate the (large) dependency layer. Standard library only: it runs on the bare base image."""

import sys
import tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as fh:
    project = tomllib.load(fh)["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["engine"]:
    print(requirement)
