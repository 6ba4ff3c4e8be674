"""DESIGN.md is the house's plan, and a plan that names files which are gone misleads the next reader. These tests
hold the document to the code, so it cannot rot silently:

- every repository path it names in backticks (`runner/run/wait.py`, `tests/faults/`, `image/*.py`) exists, and
  every bare module name (`teardown.py`) is a file somewhere in the house; `lorarun.x.y` module names resolve;
- its drawn tree (the ```tree block) names only what exists, and names every room: each folder of Python code under
  runner/, provider_adapters/, image/ and lorarun/, and each test tier under tests/;
- the Provider Protocol it prints has exactly the methods and signatures of provider_adapters/base.py;
- its exit-code table agrees with runner/errors.py, its flow names every phase of runner/state.py, its hold points
  are the ones the code holds at, and every import-linter contract in pyproject.toml is named in it (by its id).

When one of these fails, fix DESIGN.md (or the code), not the test.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import tomllib

import pytest
from support.paths import REPO

ROOT = REPO
DOC_PATH = ROOT / "DESIGN.md"
CHARTER = ("runner", "provider_adapters", "image", "lorarun")  # the folders whose rooms the tree must draw
NOT_TIERS = {"support", "fakes", "__pycache__"}  # tests/ folders that hold helpers, not tests
# A bare file name in backticks must be a file of the repository only for these kinds: `state.json` or
# `config.toml` alone are files the program writes at run time, not repository files.
BARE_CHECKED_SUFFIXES = (".py",)
PATH_CHARS = re.compile(r"^[\w.\-/*\[\]]+$")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")


def _doc() -> str:
    assert DOC_PATH.is_file(), "DESIGN.md is missing from the repository root"
    return DOC_PATH.read_text(encoding="utf-8")


def _fences(text: str) -> list[tuple[str, str]]:
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def _prose(text: str) -> str:
    return FENCE.sub("", text)


def _spans(text: str) -> list[str]:
    return SPAN.findall(_prose(text))


GENERATED = {".venv", ".git", "build", "output", "lorarun.egg-info", ".lorarun-home", ".mypy_cache", ".ruff_cache"}


def _top_level() -> set[str]:
    """The repository's own top-level entries, not what a checkout grows (`make install`'s .venv, caches)."""
    return {p.name for p in ROOT.iterdir()} - GENERATED


def _path_token(span: str) -> str | None:
    """The repository path a code span names, or None when it names something else (a command, a user's file,
    a path on the instance, a placeholder)."""
    token = span.strip().split("::", 1)[0].rstrip(".,:;")
    if token.endswith("()"):
        return None  # a call: `destroy()`
    if not token or not PATH_CHARS.match(token) or token.startswith(("/", "~")):
        return None
    first = token.split("/", 1)[0]
    if "/" in token and (first in _top_level() or token.endswith(".py")):
        return token
    if "/" not in token and (token in _top_level() or token in GENERATED):
        return None if token in GENERATED else token  # `Makefile`, `pyproject.toml`, `Dockerfile`
    if "/" not in token and token.endswith(BARE_CHECKED_SUFFIXES):
        return token
    return None


def _exists(token: str) -> bool:
    if "*" in token:
        return any(ROOT.glob(token))
    if "/" in token or token in _top_level():
        return (ROOT / token.rstrip("/")).exists()
    return token in _repo_file_names()


@functools.cache
def _repo_file_names() -> frozenset[str]:
    """Every file name in the repository, not in what a checkout grows (.venv is large: never walked)."""
    names: set[str] = set()
    for _folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in GENERATED and d != "__pycache__"]
        names.update(files)
    return frozenset(names)


def test_every_path_the_doc_names_exists():
    missing = sorted({t for span in _spans(_doc()) if (t := _path_token(span)) and not _exists(t)})
    assert not missing, f"DESIGN.md names paths that do not exist: {missing}"


def test_the_path_check_can_fail():
    """The checker itself: a made-up path is caught, a command or a user's file is not taken for a path."""
    assert _path_token("runner/run/no_such_phase.py") == "runner/run/no_such_phase.py"
    assert not _exists("runner/run/no_such_phase.py")
    assert _path_token("nowhere.py") == "nowhere.py" and not _exists("nowhere.py")
    assert _path_token("make lint") is None
    assert _path_token("~/.config/lorarun/config.toml") is None
    assert _path_token("/usr/local/bin/lorarun-python") is None
    assert _path_token("destroy()") is None
    assert _exists("runner/run/") and _exists("image/*.py") and _exists("teardown.py")


def _module_resolves(dotted: str) -> bool:
    """`lorarun.image.schema` → lorarun/image/schema.py (or a package); a trailing `.Name` must be defined there."""
    parts = dotted.split(".")
    path = ROOT / parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if (path / part).is_dir():
            path = path / part
            continue
        if (path / f"{part}.py").is_file():
            path = path / f"{part}.py"
            rest = parts[i + 1 :]
            break
        return False
    else:
        return True
    if not rest:
        return True
    source = path.read_text(encoding="utf-8")
    return len(rest) == 1 and re.search(rf"^(class|def) {rest[0]}\b|^{rest[0]}\s*[:=]", source, re.M) is not None


def test_every_lorarun_module_the_doc_names_resolves():
    names = {m for span in _spans(_doc()) for m in re.findall(r"\blorarun(?:\.\w+)+", span)}
    assert names, "the doc names no module (lorarun.x.y) at all: the check would pass vacuously"
    bad = sorted(n for n in names if not _module_resolves(n))
    assert not bad, f"DESIGN.md names modules that do not resolve: {bad}"
    assert not _module_resolves("lorarun.runner.no_such_room")


def _tree_entries() -> list[str]:
    """Paths drawn in the ```tree block: two spaces of indent per level, the name first on each line."""
    blocks = [body for info, body in _fences(_doc()) if info == "tree"]
    assert len(blocks) == 1, "DESIGN.md draws the house in exactly one ```tree block"
    stack: list[str] = []
    entries = []
    description_column = None  # where the previous entry's description starts: deeper lines continue it
    for line in blocks[0].splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if description_column is not None and indent >= description_column:
            continue
        described = re.match(r"^( *\S+ +)\S", line)
        description_column = len(described.group(1)) if described else None
        assert indent % 2 == 0, f"tree line indented by an odd number of spaces: {line!r}"
        depth = indent // 2
        assert depth <= len(stack), f"tree line indented two levels at once: {line!r}"
        name = line.split()[0]
        stack[depth:] = [name.rstrip("/")]
        entries.append("/".join(stack) + ("/" if name.endswith("/") else ""))
    return entries


def test_the_drawn_tree_names_only_what_exists():
    entries = _tree_entries()
    missing = [e for e in entries if "*" not in e and not _exists(e)]
    globs = [e for e in entries if "*" in e and not _exists(e)]
    assert not missing + globs, f"DESIGN.md's tree draws what is not there: {missing + globs}"


def _rooms() -> set[str]:
    rooms = set()
    for top in CHARTER:
        for folder in (ROOT / top).rglob("*"):
            rel = folder.relative_to(ROOT)
            if not folder.is_dir() or "__pycache__" in rel.parts or folder.is_symlink():
                continue
            if top == "lorarun" and len(rel.parts) > 1 and rel.parts[1] in CHARTER:
                continue  # lorarun/runner → runner/: drawn once, under its charter name
            if any(folder.glob("*.py")):
                rooms.add(rel.as_posix() + "/")
    rooms |= {f"tests/{p.name}/" for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name not in NOT_TIERS}
    return rooms


def test_the_drawn_tree_has_every_room():
    drawn = set(_tree_entries())
    absent = sorted(r for r in _rooms() if r not in drawn)
    assert not absent, f"rooms missing from DESIGN.md's tree (draw them and say what each is for): {absent}"


def _signatures(tree: ast.AST, class_name: str) -> dict[str, str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            sigs = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    args = ast.unparse(item.args)
                    sigs[item.name] = f"({args}) -> {ast.unparse(item.returns) if item.returns else None}"
                elif isinstance(item, ast.AnnAssign):
                    sigs[ast.unparse(item.target)] = ast.unparse(item.annotation)
            return sigs
    raise AssertionError(f"no class {class_name}")


def test_the_provider_protocol_in_the_doc_is_the_one_in_base_py():
    blocks = [body for info, body in _fences(_doc()) if info == "python" and "class Provider(Protocol)" in body]
    assert len(blocks) == 1, "DESIGN.md prints the Provider Protocol once, in a ```python block"
    documented = _signatures(ast.parse(blocks[0]), "Provider")
    code = _signatures(ast.parse((ROOT / "provider_adapters/base.py").read_text(encoding="utf-8")), "Provider")
    assert documented == code


def test_the_exit_code_table_agrees_with_the_errors():
    from lorarun.runner import errors

    section = _doc().split("## Exit codes", 1)
    assert len(section) == 2, "DESIGN.md has an '## Exit codes' section"
    rows = re.findall(r"^\|\s*(\d+)\s*\|(.*)\|\s*$", section[1].split("\n## ", 1)[0], re.M)
    assert {int(code) for code, _ in rows} >= {0, 1, 2, 3, 130}
    checked = 0
    for code, text in rows:
        for name in re.findall(r"`(\w+)`", text):
            cls = getattr(errors, name, None)
            if isinstance(cls, type) and issubclass(cls, errors.LorarunError):
                assert cls.exit_code == int(code), f"{name} exits {cls.exit_code}, DESIGN.md says {code}"
                checked += 1
    assert checked >= 3, "the exit-code table names the exception classes that carry each code"


def test_the_flow_names_every_phase_of_the_job_state():
    from lorarun.runner.state import PHASES

    spans = set(_spans(_doc()))
    absent = [p for p in PHASES if p not in spans]
    assert not absent, f"phases of runner/state.py the doc's flow does not name (in backticks): {absent}"


def _hold_points_in_code() -> set[str]:
    """Every point the code holds at; an f-string's field becomes `<…>` (`phase:{phase}` → `phase:<…>`)."""
    points = set()
    for top in ("runner", "image", "provider_adapters"):
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hold" and node.args):
                    continue
                arg = node.args[0]
                if isinstance(arg, ast.Constant):
                    points.add(arg.value)
                elif isinstance(arg, ast.JoinedStr):
                    points.add("".join(v.value if isinstance(v, ast.Constant) else "<…>" for v in arg.values))
    return points


def test_the_doc_names_every_hold_point():
    points = _hold_points_in_code()
    assert {"training", "engine:step"} <= points, points
    doc = _doc()
    absent = [p for p in points if p.split("<…>")[0] not in doc]
    assert not absent, f"hold points the code has and DESIGN.md does not name: {absent}"


def test_every_import_contract_is_named_in_the_doc():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config.get("tool", {}).get("importlinter", {}).get("contracts", [])
    if not contracts:
        pytest.skip("no import-linter contract configured in pyproject.toml yet")
    spans = set(_spans(_doc()))
    absent = [c.get("id", c["name"]) for c in contracts if c.get("id", c["name"]) not in spans]
    assert not absent, f"import-linter contracts DESIGN.md does not name (by id, in backticks): {absent}"


def _readme_developer_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    parts = text.split("\n## Developing lorarun\n", 1)
    assert len(parts) == 2, "README.md has a '## Developing lorarun' section"
    return parts[1].split("\n## ", 1)[0]


def test_the_readme_developer_section_names_only_real_paths():
    section = _readme_developer_section()
    missing = sorted({t for span in _spans(section) if (t := _path_token(span)) and not _exists(t)})
    assert not missing, f"README's developer section names paths that do not exist: {missing}"


def test_the_readme_says_how_to_run_every_check_ci_runs():
    """Every `make` target .ci/run runs is in README's developer section, and is a target of the Makefile."""
    ci_targets = set(re.findall(r"^\s*make (\w[\w-]*)", (ROOT / ".ci/run").read_text(encoding="utf-8"), re.M))
    assert {"lint", "test", "faults", "test-container"} <= ci_targets, ci_targets
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    section = _readme_developer_section()
    for target in sorted(ci_targets):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"CI runs `make {target}`, the Makefile lacks it"
        assert f"`make {target}`" in section, f"README's developer section does not say what `make {target}` does"


def test_every_reference_to_a_section_of_the_doc_finds_it():
    """Code and README point readers at DESIGN.md's sections by title (`DESIGN.md, "The house"`): each title is there."""
    headings = {h.strip() for h in re.findall(r"^#+ (.+)$", _doc(), re.M)}
    references = []
    for path in [
        ROOT / "README.md",
        ROOT / "setup.py",
        *[p for top in CHARTER[:3] for p in (ROOT / top).rglob("*.py")],
    ]:
        for title in re.findall(r'DESIGN\.md, "([^"]+)"', path.read_text(encoding="utf-8")):
            references.append((path.relative_to(ROOT).as_posix(), title))
    assert references, "nothing points at a section of DESIGN.md: the check would pass vacuously"
    broken = [(where, title) for where, title in references if title not in headings]
    assert not broken, f"references to DESIGN.md sections that do not exist: {broken}"


def test_the_doc_describes_every_module_of_the_contract():
    """The contract (image/*.py) is what both sides read: each of its modules is named and said what it holds."""
    modules = sorted(p.name for p in (ROOT / "image").glob("*.py") if p.name != "__init__.py")
    assert "destroy_plan.py" in modules
    absent = [m for m in modules if f"`image/{m}`" not in _doc()]
    assert not absent, f"contract modules DESIGN.md does not describe: {absent}"
