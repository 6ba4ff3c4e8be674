"""`lorarun --help` and `--version` import only what they print (issue #22.4): the controller, the SSH link, the
provider clients and the heavy libraries load where a command needs them. This checks which modules are loaded,
not how long it takes (bench/cli_startup.py measures that)."""

from __future__ import annotations

import json
import subprocess
import sys

# Each of these costs tens of milliseconds or more to import, and none is needed to print the help.
HEAVY = (
    "paramiko",
    "cryptography",
    "requests",
    "urllib3",
    "yaml",
    "PIL",
    "numpy",
    "safetensors",
    "torch",
    "docker",
    "rich.markdown",  # typer's rich help layout: the top-level help uses click's plain one
    "lorarun.sshlink",
    "lorarun.provider_adapters.vastai",
    "lorarun.provider_adapters.runpod",
    "lorarun.runner.run.pipeline",
    "lorarun.runner.run.connect",
    "lorarun.runner.job.validate",
    "lorarun.runner.job.spec",
    "lorarun.runner.price.estimate",
)


def _modules_after(*args: str) -> tuple[str, set[str]]:
    code = (
        "import json, sys\n"
        "from lorarun.runner.cli.entry import main\n"
        "code = main(sys.argv[1:])\n"
        "print('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    out, _, modules = done.stdout.rpartition("\nMODULES ")
    return out, set(json.loads(modules))


def _loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


def test_help_lists_every_command_without_importing_the_controller():
    out, modules = _modules_after("--help")
    for command in ("validate", "estimate", "submit", "status", "attach", "down", "gc", "config"):
        assert f"  {command} " in out, out
    assert not [name for name in HEAVY if _loaded(modules, name)]


def test_version_does_not_even_import_typer():
    out, modules = _modules_after("--version")
    assert out.startswith("lorarun ")
    assert not _loaded(modules, "typer") and not _loaded(modules, "rich")
