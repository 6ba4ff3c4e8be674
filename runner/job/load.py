"""Reading a job file: YAML or a kohya TOML, built into a `JobSpec` (spec.py, kohya_toml.py), then the user's own
defaults (user_config.py) wherever the file is silent. Kept apart from spec.py so that the TOML reader and the user
config can import the spec's types without the spec importing them back."""

from __future__ import annotations

from pathlib import Path

import yaml

from lorarun.runner.errors import InvalidJob, SpecError
from lorarun.runner.job.kohya_toml import load_kohya_toml
from lorarun.runner.job.spec import JobSpec, build_job
from lorarun.runner.job.user_config import inherit


def load_job(path: Path) -> JobSpec:
    """Read a job file (YAML or kohya TOML), build and validate it. Raises SpecError with one line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SpecError(f"{path}: job file not found")
    if path.suffix.lower() == ".toml":
        return _with_user_config_even_if_invalid(load_kohya_toml, path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecError(f"{path}:{where}: {problem}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    return _with_user_config_even_if_invalid(build_job, data, path)


def _with_user_config_even_if_invalid(build, *args) -> JobSpec:
    """The user's defaults apply to a job with problems too: `validate` goes on judging the parts that parsed
    (the machine for the user's provider, the GPUs from their config) and should judge what will really run."""
    try:
        spec = build(*args)
    except InvalidJob as exc:
        if getattr(exc, "spec", None) is not None:
            exc.spec = _with_user_config(exc.spec)
        raise
    return _with_user_config(spec)


def _with_user_config(spec: JobSpec) -> JobSpec:
    """The user's own defaults (`lorarun config`) wherever the job file is silent."""
    return inherit(spec)  # values checked as the config was read; ranges by validate_job's spec.problems()
