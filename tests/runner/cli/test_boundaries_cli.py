"""#15 points 1, 2, 6, 7: every absurd or non-finite input is refused at `validate`, and by `submit --yes` before
any provider call — exit 2, one `error:` line naming the field and what to do, no traceback.

The numeric cases are generated from the one range table (`image/ranges.py`): for every numeric field of the job,
a value above its range, one below it, NaN and infinity. The provider is the fake Vast.ai API on 127.0.0.1; its
request log must stay empty for every case (nothing looked up, nothing rented).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib
from pathlib import Path

import pytest
from fakes.vast_server import API_KEY as VAST_KEY
from fakes.vast_server import FakeVast
from helpers_dataset import make_dataset

from lorarun.image.ranges import RANGES
from lorarun.runner.cli.app import main
from lorarun.runner.job.spec import SECTIONS

SPEC_FIELDS = sorted(
    k
    for k in RANGES
    if k.split(".")[0] in SECTIONS
    and k.split(".")[1] in {f.name for f in dataclasses.fields(SECTIONS[k.split(".")[0]])}
)
INT_FIELDS = {  # whole-number fields: their out-of-range values are written as integers
    "model.clip_skip",
    "dataset.resolution",
    "dataset.min_bucket_reso",
    "dataset.max_bucket_reso",
    "dataset.bucket_reso_steps",
    "dataset.keep_tokens",
    "training.max_train_epochs",
    "training.max_train_steps",
    "training.batch_size",
    "training.gradient_accumulation_steps",
    "training.network_dim",
    "training.lr_scheduler_num_cycles",
    "training.save_every_n_epochs",
    "training.seed",
    "training.max_data_loader_n_workers",
    "sample.every_n_epochs",
    "sample.steps",
    "sample.seed",
    "sample.width",
    "sample.height",
    "sample.grid_seeds",
    "resources.gpu_count",
    "resources.ssh_port",
}


@pytest.fixture(scope="module")
def vast():
    fake = FakeVast(boot_polls=2)
    fake.start()
    yield fake
    fake.stop()


def _value(key: str, variant: str) -> str:
    rng = RANGES[key]
    if variant == "nan":
        return ".nan"
    if variant == "inf":
        return ".inf"
    if variant == "-inf":
        return "-.inf"
    bad = rng.high * 10 + 1 if variant == "above" else rng.low - 1
    return str(int(bad)) if key in INT_FIELDS else repr(float(bad))


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    """One small dataset for the many cases that only change the job file."""
    return make_dataset(tmp_path_factory.mktemp("shared") / "data", {"10_x": 2})


def _job_with(
    tmp_path: Path, sections: dict[str, dict[str, str]], dataset: dict[str, int] | None = None, data: Path | None = None
) -> Path:
    """A valid vastai job (tiny model, two captioned images) with `sections` set on top of it."""
    data = data or make_dataset(tmp_path / "data", dataset or {"10_x": 2})
    body = {
        "model": {"base": "builtin:tiny-sd15"},
        "dataset": {
            "path": str(data),
            "resolution": "64",
            "min_bucket_reso": "32",
            "max_bucket_reso": "128",
            "bucket_reso_steps": "16",
        },
        "training": {"epochs": "1", "batch_size": "1", "optimizer": "AdamW", "mixed_precision": '"no"'},
        "resources": {"provider": "vastai"},
        "output": {"dir": str(tmp_path / "out")},
    }
    for section, values in sections.items():
        body.setdefault(section, {}).update(values)
    lines = []
    for section, values in body.items():
        lines.append(f"{section}:")
        lines += [f"  {k}: {v}" for k, v in values.items()]
    job = tmp_path / "job.yaml"
    job.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return job


def _run(capsys, args: list[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def _assert_refused(vast, monkeypatch, capsys, command: str, job: Path, expected: str, flags: tuple[str, ...] = ()):
    monkeypatch.setenv("VAST_URL", vast.url)
    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    before = len(vast.requests)
    args = [command, str(job), *flags] + (["--yes"] if command == "submit" else [])
    code, out = _run(capsys, args)
    error_lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 2, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert len(error_lines) == 1, out
    assert expected in error_lines[0], out
    assert len(vast.requests) == before, f"the provider was called: {vast.requests[before:]}"


def _refusal_problem(vast, capsys, command: str, job: Path, expected: str, flags: tuple[str, ...] = ()) -> str | None:
    """What is wrong with how `command` treated `job` (None: exit 2, one error line naming `expected`, no call)."""
    before = len(vast.requests)
    code, out = _run(capsys, [command, str(job), *flags] + (["--yes"] if command == "submit" else []))
    error_lines = [line for line in out.splitlines() if line.startswith("error:")]
    if code != 2 or "Traceback" in out or "internal error" in out or len(error_lines) != 1:
        return f"exit {code}, {len(error_lines)} error line(s): {out.strip()[-400:]}"
    if expected not in error_lines[0]:
        return f"the error line does not name {expected}: {error_lines[0]}"
    if len(vast.requests) != before:
        return f"the provider was called: {vast.requests[before:]}"
    return None


# Every numeric field × {above its range, below it, NaN, inf}, through `validate` and `submit --yes`. One test per
# (command, variant) looping over the fields: ~450 CLI runs, cheap enough only without a fixture set-up each.
@pytest.mark.parametrize("variant", ["above", "below", "nan", "inf"])
@pytest.mark.parametrize("command", ["validate", "submit"])
def test_every_numeric_field_out_of_range_or_non_finite_exits_2(
    vast, shared_data, tmp_path, monkeypatch, capsys, command, variant
):
    monkeypatch.setenv("VAST_URL", vast.url)
    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    failures = []
    for key in SPEC_FIELDS:
        if variant == "below" and RANGES[key].low <= -10:
            continue  # no lower bound worth testing
        section, name = key.split(".")
        sections = {section: {name: _value(key, variant)}}
        if section == "flux":  # the flux section belongs to a Flux job
            sections["model"] = {"family": "flux", "base": "builtin:tiny-flux"}
        folder = tmp_path / key
        folder.mkdir()
        problem = _refusal_problem(vast, capsys, command, _job_with(folder, sections, data=shared_data), key)
        if problem:
            failures.append(f"{key} = {_value(key, variant)}: {problem}")
    assert not failures, "\n".join(failures)


def _bomb_png(path: Path, width: int = 65535, height: int = 65535) -> Path:
    """A valid PNG header claiming 4.3 Gpx, with a few bytes of data: decoding it would need gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def _named_cases(tmp_path: Path) -> dict[str, tuple[Path, str, tuple[str, ...]]]:
    """The issue's own bad inputs: job file, expected text in the one error line, extra command-line flags."""
    cases: dict[str, tuple[Path, str, tuple[str, ...]]] = {}

    def case(name: str, sections: dict, expected: str, flags: tuple[str, ...] = (), dataset=None) -> None:
        folder = tmp_path / name
        folder.mkdir()
        cases[name] = (_job_with(folder, sections, dataset), expected, flags)

    case("epochs 1e30", {"training": {"epochs": "1.0e+30"}}, "training.max_train_epochs")
    case("repeats folder", {}, "99999999999999999999_mychar", dataset={"99999999999999999999_mychar": 1})
    case("steps 1e15", {"training": {"epochs": "null", "steps": "1.0e+15"}}, "training.max_train_steps")
    case("sample steps 1e9", {"sample": {"steps": "1000000000"}}, "sample.steps")
    case("total steps", {"training": {"epochs": "9000"}}, "optimizer steps in all", dataset={"9000_x": 2})
    case("network_dim 1e12", {"training": {"network_dim": "1.0e+12"}}, "training.network_dim")
    case("huge resolution", {"dataset": {"resolution": "1048576"}}, "dataset.resolution")
    case("gpu_count 100000", {"resources": {"gpu_count": "100000"}}, "resources.gpu_count")
    case("ssh_port 99999", {"resources": {"ssh_port": "99999"}}, "resources.ssh_port")
    case("alpha nan", {"training": {"network_alpha": ".nan"}}, "training.network_alpha")
    case("max_cost nan", {"resources": {"max_cost": ".nan"}}, "resources.max_cost")
    case("optimizer_args text", {"training": {"optimizer_args": '["weight_decay=abc"]'}}, "training.optimizer_args")
    case("optimizer_args nan", {"training": {"optimizer_args": '["eps=1e999"]'}}, "training.optimizer_args")
    case("optimizer_args key", {"training": {"optimizer_args": '["weight_decy=0.1"]'}}, "did you mean 'weight_decay'")
    case("optimizer_args betas", {"training": {"optimizer_args": '["betas=0.9,1.5"]'}}, "training.optimizer_args")
    case("name ..", {"output": {"name": '".."'}}, "output.name")
    case("name nul", {"output": {"name": '"a\\0b"'}}, "output.name")
    case("name long", {"output": {"name": "x" * 250}}, "output.name")
    case("name slash", {"output": {"name": "a/b"}}, "output.name")
    case("out is a file", {}, "--out", flags=("--out", str(_file(tmp_path / "a-file"))))
    case("out under a file", {}, "--out", flags=("--out", str(_file(tmp_path / "b-file") / "sub")))
    case("output.dir is a file", {"output": {"dir": str(_file(tmp_path / "c-file"))}}, "output.dir")
    for flag, value in (("--max-cost", "nan"), ("--max-cost", "inf"), ("--max-cost", "-1"), ("--max-cost", "1e12")):
        case(f"{flag} {value}", {}, flag, flags=(flag, value))
    return cases


def _file(path: Path) -> Path:
    path.write_text("not a folder")
    return path


NAMED = [
    "epochs 1e30",
    "repeats folder",
    "steps 1e15",
    "sample steps 1e9",
    "total steps",
    "network_dim 1e12",
    "huge resolution",
    "gpu_count 100000",
    "ssh_port 99999",
    "alpha nan",
    "max_cost nan",
    "optimizer_args text",
    "optimizer_args nan",
    "optimizer_args key",
    "optimizer_args betas",
    "name ..",
    "name nul",
    "name long",
    "name slash",
    "out is a file",
    "out under a file",
    "output.dir is a file",
    "--max-cost nan",
    "--max-cost inf",
    "--max-cost -1",
    "--max-cost 1e12",
]
FLAG_ONLY = {
    "out is a file",
    "out under a file",
    "--max-cost nan",
    "--max-cost inf",
    "--max-cost -1",
    "--max-cost 1e12",
}  # flags of submit; `validate` has none


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("command", ["validate", "submit"])
def test_the_issues_bad_inputs_exit_2(vast, tmp_path, monkeypatch, capsys, command, name):
    if command == "validate" and name in FLAG_ONLY:
        pytest.skip("a flag of submit")
    job, expected, flags = _named_cases(tmp_path)[name]
    _assert_refused(vast, monkeypatch, capsys, command, job, expected, flags)


@pytest.mark.parametrize("flag", ["--lease-seconds", "--grace-seconds"])
@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e30"])
def test_timing_flags_are_finite_and_bounded(vast, tmp_path, monkeypatch, capsys, flag, value):
    _assert_refused(vast, monkeypatch, capsys, "submit", _job_with(tmp_path, {}), flag, (flag, value))


@pytest.mark.parametrize("command", ["validate", "submit"])
def test_dataset_boundaries_are_per_file_errors(vast, tmp_path, monkeypatch, capsys, command):
    """A decompression bomb, a caption linked to the user's config and an image linked to a key: each is one line
    naming the file, none is read beyond its header, nothing is sent anywhere."""
    for name, expected in (("bomb", "bomb.png"), ("caption link", "img_000.txt"), ("image link", "key.png")):
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        job = _job_with(folder, {})
        images = folder / "data" / "10_x"
        if name == "bomb":
            _bomb_png(images / "bomb.png")
        elif name == "caption link":
            secret = folder / "config.toml"
            secret.write_text('vast_api_key = "secret"\n')
            (images / "img_000.txt").unlink()
            (images / "img_000.txt").symlink_to(secret)
        else:
            key = folder / "id_ed25519"
            key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
            (images / "key.png").symlink_to(key)
        _assert_refused(vast, monkeypatch, capsys, command, job, expected)


def test_kohya_toml_numbers_are_held_to_the_same_ranges(vast, tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", {"10_x": 2})
    for i, (line, expected) in enumerate(
        (
            ("max_train_epochs = nan", "max_train_epochs"),
            ("network_dim = 1e12", "network_dim"),
            ("learning_rate = inf", "learning_rate"),
        )
    ):
        toml = tmp_path / f"job{i}.toml"
        toml.write_text(
            f"""
pretrained_model_name_or_path = "builtin:tiny-sd15"
train_data_dir = "{data}"
resolution = "64,64"
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 16
mixed_precision = "no"
optimizer_type = "AdamW"
output_dir = "{tmp_path / "out"}"
{line}
""",
            encoding="utf-8",
        )
        _assert_refused(vast, monkeypatch, capsys, "validate", toml, expected)


def test_validate_lists_every_problem_at_once(tmp_path, capsys):
    job = _job_with(
        tmp_path,
        {
            "training": {"network_alpha": ".nan", "network_dim": "1.0e+12"},
            "resources": {"ssh_port": "99999"},
            "output": {"name": '".."'},
        },
        dataset={"10_x": 1, "99999999999999999999_y": 1},
    )
    code, out = _run(capsys, ["validate", str(job)])
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 2
    for field in (
        "training.network_alpha",
        "training.network_dim",
        "resources.ssh_port",
        "output.name",
        "99999999999999999999_y",
    ):
        assert sum(field in line for line in lines) == 1, out


def test_predicted_cost_above_the_ceiling_is_refused_even_with_yes(vast, tmp_path, monkeypatch, capsys):
    """No max_cost: the default ceiling (here lowered through the environment) refuses the job after the estimate,
    before any create; with a max_cost the job's own limit decides."""
    monkeypatch.setenv("VAST_URL", vast.url)
    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    monkeypatch.setenv("LORARUN_COST_CEILING", "0.0001")
    job = _job_with(tmp_path, {})
    code, out = _run(capsys, ["submit", str(job), "--yes"])
    assert code == 2, out
    assert "LORARUN_COST_CEILING" in out and "nothing was rented" in out
    assert not [r for r in vast.requests if r.method in ("PUT", "POST") and "/asks/" in r.path], "an offer was rented"
    monkeypatch.setenv("LORARUN_COST_CEILING", "nan")
    code, out = _run(capsys, ["submit", str(job), "--yes"])
    assert code == 2 and "LORARUN_COST_CEILING" in out, out
    assert not [r for r in vast.requests if r.method in ("PUT", "POST") and "/asks/" in r.path]


def test_a_symlinked_sub_folder_is_scanned_like_any_other(tmp_path, capsys):
    job = _job_with(tmp_path, {})
    elsewhere = make_dataset(tmp_path / "elsewhere", {"photos": 3})
    (tmp_path / "data" / "5_linked").symlink_to(elsewhere / "photos")
    code, out = _run(capsys, ["validate", str(job)])
    assert code == 0, out
    assert "5_linked" in out and "symbolic link" in out
    assert "training images 35" in out  # 2 × 10 + 3 × 5


def test_unreadable_output_folder_is_refused(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        job = _job_with(tmp_path, {"output": {"dir": str(locked / "out")}})
        code, out = _run(capsys, ["validate", str(job)])
        assert code == 2 and "not writable" in out, out
    finally:
        locked.chmod(0o700)
