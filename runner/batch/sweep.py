"""`lorarun sweep SWEEP.yaml`: one base job and a grid (every combination) or a list of overrides, each variant a
job of its own with its own name and output folder.

The sweep file is a job file with a `sweep:` section (the rest of the file is the base job), or a file naming
`base: job.yaml` beside `grid:`/`variants:`/`rentals:`:

    sweep:
      rentals: 3
      grid: {learning_rate: [1e-4, 5e-5], network_dim: [16, 32]}   # 4 variants
      variants: [{network_dim: 64, network_alpha: 32}]                # and one more

Keys are a section's field (`learning_rate`, `network_dim`, the YAML aliases such as `epochs`) or dotted
(`training.learning_rate`). Each variant is written as a hidden job file beside the base (`.sweep-NAME.yaml`) so
every relative path (dataset, model, output) means what it means in the base; its `output.dir` is the base's
folder plus the variant's name, and the sample section is the base's: every grid uses the same prompts and seeds,
which is what makes the batch report's grids comparable."""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lorarun.image.names import MAX_NAME_LENGTH, output_name_problem
from lorarun.runner.errors import InvalidJob, SpecError

MAX_VARIANTS = 64  # a grid of 4 keys × 4 values is 256 rentals' worth of jobs: almost surely a typo
SWEEP_KEYS = ("base", "rentals", "grid", "variants")
SHORT = {"learning_rate": "lr", "network_dim": "dim", "network_alpha": "alpha", "max_train_epochs": "ep"}


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[tuple[str, str, Any], ...]  # (section, field, value)
    path: Path  # the job file written for it


@dataclass(frozen=True)
class Sweep:
    source: Path
    base: Path  # the base job's file (the sweep file itself when the job is inline)
    rentals: int | None
    variants: tuple[Variant, ...]

    @property
    def job_files(self) -> list[Path]:
        return [v.path for v in self.variants]


def load_sweep(path: Path) -> Sweep:
    """Read, check and expand a sweep file; write one job file per variant. Raises InvalidJob (exit 2) listing
    every problem; nothing is rented before this returns."""
    path = Path(path).expanduser()
    data = _read_yaml(path)
    if "sweep" in data:
        section = data.pop("sweep")
        if not isinstance(section, dict):
            raise SpecError(f"{path}: sweep: expected a mapping with grid and/or variants")
        base_path, base = path, data
    elif "base" in data:
        section = data
        base_path = (path.parent / str(data["base"])).expanduser()
        if base_path.suffix.lower() not in (".yaml", ".yml"):
            raise SpecError(f"{path}: base: {base_path.name} must be a lorarun YAML job (a sweep overrides its fields)")
        if not base_path.is_file():
            raise SpecError(f"{path}: base: {base_path} not found")
        base = _read_yaml(base_path)
    else:
        raise SpecError(f"{path}: a sweep needs a `sweep:` section (grid/variants) or `base: job.yaml`")
    problems = [
        f"{path}: sweep: unknown key {k!r} (known: {', '.join(SWEEP_KEYS)})" for k in section if k not in SWEEP_KEYS
    ]
    rentals = section.get("rentals")
    if rentals is not None and (isinstance(rentals, bool) or not isinstance(rentals, int) or not 1 <= rentals <= 16):
        problems.append(f"{path}: sweep.rentals: expected a whole number from 1 to 16, got {rentals!r}")
        rentals = None
    combos = _combinations(path, section, base, problems)
    if not combos and not problems:
        problems.append(f"{path}: sweep: no variants (give grid: {{key: [values]}} or variants: [{{key: value}}])")
    if len(combos) > MAX_VARIANTS:
        problems.append(f"{path}: sweep: {len(combos)} variants; at most {MAX_VARIANTS} in one sweep")
    if problems:
        raise InvalidJob(problems)
    base_name = str(base.get("name") or base_path.stem)
    variants = []
    seen: dict[str, int] = {}
    for combo in combos:
        name = variant_name(base_name, combo)
        if name in seen:  # two variants that read the same: number them rather than overwrite one's outputs
            seen[name] += 1
            name = f"{name[: MAX_NAME_LENGTH - 4]}-{seen[name]}"
        seen.setdefault(name, 1)
        job = _variant_job(base, combo, name)
        target = base_path.parent / f".sweep-{name}.yaml"
        target.write_text(
            f"# written by `lorarun sweep {path.name}` from {base_path.name}: do not edit, edit the sweep\n"
            + yaml.safe_dump(job, sort_keys=False),
            encoding="utf-8",
        )
        variants.append(Variant(name=name, overrides=tuple(combo), path=target))
    return Sweep(source=path, base=base_path, rentals=rentals, variants=tuple(variants))


def variant_name(base: str, combo: list[tuple[str, str, Any]]) -> str:
    """`mychar-lr0.0001-dim16`: the base name and each override, short and file-name safe."""
    parts = [base]
    for _section, key, value in combo:
        text = format(value, "g") if isinstance(value, float) else str(value)
        parts.append(f"{SHORT.get(key, key)}{text}")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).lstrip(".-") or "variant"
    name = name[:MAX_NAME_LENGTH]
    if output_name_problem(name):
        name = "variant"
    return name


def _combinations(path: Path, section: dict, base: dict, problems: list[str]) -> list[list[tuple[str, str, Any]]]:
    combos: list[list[tuple[str, str, Any]]] = []
    grid = section.get("grid") or {}
    if not isinstance(grid, dict):
        problems.append(f"{path}: sweep.grid: expected a mapping of key: [values]")
        grid = {}
    axes = []
    for key, values in grid.items():
        where = _locate(str(key), base)
        if isinstance(where, str):
            problems.append(f"{path}: sweep.grid.{key}: {where}")
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"{path}: sweep.grid.{key}: expected a non-empty list of values, got {values!r}")
            continue
        axes.append([(where[0], where[1], _number(v)) for v in values])
    if axes:
        combos.extend(list(c) for c in itertools.product(*axes))
    listed = section.get("variants") or []
    if not isinstance(listed, list):
        problems.append(f"{path}: sweep.variants: expected a list of mappings")
        listed = []
    for n, overrides in enumerate(listed):
        if not isinstance(overrides, dict) or not overrides:
            problems.append(f"{path}: sweep.variants[{n}]: expected a mapping of key: value")
            continue
        combo = []
        for key, value in overrides.items():
            where = _locate(str(key), base)
            if isinstance(where, str):
                problems.append(f"{path}: sweep.variants[{n}].{key}: {where}")
            else:
                combo.append((where[0], where[1], _number(value)))
        combos.append(combo)
    return combos


def _locate(key: str, base: dict) -> tuple[str, str] | str:
    """(section, YAML key) for a sweep key, or the one-line problem with it."""
    from lorarun.runner.job.spec import SECTIONS

    if key in ("name", "output.name", "output.dir"):
        return f"{key} is set per variant by the sweep"
    if "." in key:
        section, field = key.split(".", 1)
        if section not in SECTIONS:
            return f"unknown section {section!r} (known: {', '.join(SECTIONS)})"
        if not _has_field(section, field):
            return f"{section} has no field {field!r}"
        return section, field
    found = [s for s in SECTIONS if s != "output" and _has_field(s, key)]
    if not found:
        return "not a field of any section (spell it as in the job file, e.g. learning_rate or training.epochs)"
    if len(found) > 1:
        mentioned = [s for s in found if isinstance(base.get(s), dict) and key in base[s]]
        if len(mentioned) != 1:
            return f"is a field of {' and '.join(found)}; write it dotted, e.g. {found[0]}.{key}"
        found = mentioned
    return found[0], key


def _has_field(section: str, key: str) -> bool:
    from lorarun.runner.job.spec import SECTIONS, YAML_ALIASES

    fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
    return key in fields or key in YAML_ALIASES.get(section, {})


def _variant_job(base: dict, combo: list[tuple[str, str, Any]], name: str) -> dict:
    job = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for section, key, value in combo:
        job.setdefault(section, {})
        if not isinstance(job[section], dict):
            job[section] = {}
        job[section][key] = value
    output = job.setdefault("output", {}) if isinstance(job.get("output"), dict) else {}
    job["output"] = output
    output["dir"] = str(Path(str(output.get("dir") or "output")) / name)
    output["name"] = name
    job["name"] = name
    return job


def _number(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as text; a sweep's values are meant as numbers."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        return float(value)
    return value


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise SpecError(f"{path}: sweep file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"{path}:{f' line {mark.line + 1}' if mark else ''}: invalid YAML") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping")
    return data
