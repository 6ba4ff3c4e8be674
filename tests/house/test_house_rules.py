"""The house's structure, checked (issue #22): the layer contracts in pyproject.toml ([tool.importlinter]) are kept
and each one catches the import it forbids; no import cycle anywhere (tools/check_cycles.py, run by `make lint`)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import REPO

ROOT = REPO


def _check_cycles():
    spec = importlib.util.spec_from_file_location("check_cycles", ROOT / "tools" / "check_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- no import cycles -------------------------------------------------------------------------------------------


def test_the_cycle_check_finds_every_loop_and_nothing_else():
    cycles = _check_cycles().cycles
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": {"d"}, "g": set()}
    assert cycles(edges) == [["a", "b", "c"], ["e"]]  # d and f only lead into the loop; e imports itself
    assert cycles({"x": {"y"}, "y": set()}) == []
    # deep chains: iterative, no recursion limit
    chain = {f"m{i}": {f"m{i + 1}"} for i in range(5000)}
    assert cycles(chain) == []
    chain["m5000"] = {"m0"}
    assert len(cycles(chain)[0]) == 5001


def test_the_cycle_check_sees_lazy_and_type_only_imports_in_a_real_package(tmp_path, monkeypatch, capsys):
    package = tmp_path / "tangle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("def f():\n    from tangle import two\n\n    return two\n")
    (package / "two.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from tangle import one\n"
    )
    (package / "three.py").write_text("from tangle import one\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _check_cycles().main(["tangle"]) == 1
    out = capsys.readouterr().out
    assert "import cycle among 2 module(s)" in out
    assert "tangle.one -> tangle.two" in out and "tangle.two -> tangle.one" in out
    assert "tangle.three" not in out


def test_lorarun_has_no_import_cycle(capsys):
    assert _check_cycles().main(["lorarun"]) == 0, capsys.readouterr().out


# --- the layer contracts ----------------------------------------------------------------------------------------

LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def _lint_imports(source_root: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache", "--no-logo", str(config)],
        cwd=source_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def house_copy(tmp_path_factory) -> Path:
    """The package's Python files as one plain tree (the symbolic links resolved), to break on purpose."""
    root = tmp_path_factory.mktemp("house")
    shutil.copytree(
        ROOT / "lorarun",
        root / "pristine" / "lorarun",
        ignore=lambda folder, names: [
            n for n in names if n == "__pycache__" or (not n.endswith(".py") and not Path(folder, n).is_dir())
        ],
    )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_house_keeps_its_layer_contracts():
    result = _lint_imports(ROOT, ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


# (file to change, line added to it, the contract that must break)
CROSSINGS = [
    ("image/schema.py", "from lorarun.runner import state", "house-layers"),
    ("sshlink/session.py", "from lorarun.provider_adapters import base", "house-layers"),
    ("provider_adapters/base.py", "from lorarun.runner import errors", "house-layers"),
    ("runner/ui/views.py", "from lorarun.runner.cli import app", "runner-rooms"),
    ("runner/run/verify.py", "from lorarun.runner.ui import views", "runner-rooms"),
    ("runner/cli/gc.py", "from lorarun.provider_adapters import base", "cli-through-controller"),
    ("runner/cli/logs.py", "from lorarun.sshlink import session", "cli-through-controller"),
    ("image/instance/agent.py", "from lorarun.image.engine import events", "image-rooms"),
    ("image/names.py", "from lorarun.image.instance import lease", "image-rooms"),
    ("runner/run/verify.py", "from lorarun.image.engine import events", "laptop-not-instance"),
    ("provider_adapters/base.py", "from lorarun.image.instance import lease", "laptop-not-instance"),
]

NAMES = {
    "house-layers": "cli and controller (runner) above the provider adapters",
    "runner-rooms": "inside runner/: the CLI above the web UI above the controller",
    "cli-through-controller": "the CLI reaches the providers and the SSH link only through the controller",
    "image-rooms": "inside image/: the instance side (agent, engine) above the contract",
    "laptop-not-instance": "the laptop side (controller, adapters, SSH link) reads only image/'s contract",
}


@pytest.mark.parametrize(("path", "line", "contract"), CROSSINGS, ids=[f"{c}:{p}" for p, _, c in CROSSINGS])
def test_each_contract_catches_the_import_it_forbids(house_copy, tmp_path, path, line, contract):
    tree = tmp_path / "src"
    shutil.copytree(house_copy / "pristine", tree)
    target = tree / "lorarun" / path
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint_imports(tree, house_copy / "pyproject.toml")
    assert result.returncode == 1, result.stdout
    assert "0 broken" not in result.stdout, result.stdout
    broken = " ".join(result.stdout.split("Broken contracts")[1].split())
    assert NAMES[contract] in broken, broken  # (the contract module the laptop reads also breaks the laptop's rule)


def test_a_new_module_at_a_room_root_must_be_placed_in_the_layers(house_copy, tmp_path):
    """`exhaustive`: a module added to image/'s root (or runner/'s) without a place in the contract fails the
    check, so nothing joins the contract (which must import nothing of ours) unseen."""
    tree = tmp_path / "src"
    shutil.copytree(house_copy / "pristine", tree)
    (tree / "lorarun" / "image" / "loose.py").write_text("X = 1\n")
    (tree / "lorarun" / "runner" / "loose.py").write_text("X = 1\n")
    result = _lint_imports(tree, house_copy / "pyproject.toml")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "lorarun.image.loose" in text and "lorarun.runner.loose" in text, text


# --- small files ------------------------------------------------------------------------------------------------

MAX_LINES = 450  # the house rule: 400 is the aim, none over 450 in the charter's code folders
SIZED_FOLDERS = ("runner", "provider_adapters", "image", "lorarun/sshlink")


def files_over(root: Path, folders: tuple[str, ...], limit: int) -> list[str]:
    """`path: N lines` for each Python file under `folders` longer than `limit` lines, longest first."""
    over = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > limit:
                over.append((lines, f"{path.relative_to(root).as_posix()}: {lines} lines"))
    return [text for _, text in sorted(over, reverse=True)]


def test_no_file_in_the_code_folders_is_over_450_lines():
    assert files_over(ROOT, SIZED_FOLDERS, MAX_LINES) == [], "split these by meaning (one concern per file)"


def test_the_size_check_sees_a_long_file_deep_in_a_folder(tmp_path):
    deep = tmp_path / "image" / "engine" / "flux"
    deep.mkdir(parents=True)
    (deep / "long.py").write_text("x = 1\n" * 451)
    (deep / "fits.py").write_text("x = 1\n" * 450)
    (tmp_path / "runner").mkdir()
    (tmp_path / "runner" / "notes.txt").write_text("x\n" * 1000)  # not Python: not counted
    assert files_over(tmp_path, ("image", "runner"), MAX_LINES) == ["image/engine/flux/long.py: 451 lines"]
