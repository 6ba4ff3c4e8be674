"""The range table (image/ranges.py) covers every numeric field of the job, and its checks fail NaN and infinity."""

from __future__ import annotations

import dataclasses
import math
import types
import typing

import pytest

from lorarun.image.engine_config import EngineConfig
from lorarun.image.ranges import LEASE_SECONDS, RANGES, Range, out_of_range, range_problems
from lorarun.image.schema import ConfigError, convert
from lorarun.runner.job.spec import SECTIONS


def _is_numeric(tp) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_numeric(a) for a in args if a is not type(None))
    if origin is tuple:
        return any(_is_numeric(a) for a in args if a is not Ellipsis)
    return tp in (int, float)


def test_every_numeric_field_of_the_job_has_a_range():
    missing = []
    for section, cls in SECTIONS.items():
        for name, tp in typing.get_type_hints(cls).items():
            if _is_numeric(tp) and f"{section}.{name}" not in RANGES:
                missing.append(f"{section}.{name}")
    assert not missing, f"add these to RANGES in image/ranges.py: {missing}"


def test_every_row_names_a_real_field():
    fields = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert sorted(set(RANGES) - fields - {"dataset.repeats"}) == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_fail_every_range(value):
    for key, rng in RANGES.items():
        assert not rng.contains(value), key
        assert "not a finite number" in out_of_range(key, value)


def test_bounds_and_open_ends():
    assert Range(1, 10).contains(1) and Range(1, 10).contains(10) and not Range(1, 10).contains(10.5)
    assert not Range(0, 1, low_open=True).contains(0) and Range(0, 1, low_open=True).contains(1e-9)
    assert out_of_range("training.network_dim", 10**12).startswith("training.network_dim: 1000000000000 is outside")
    assert "1e+30" in out_of_range("training.max_train_epochs", int(1e30))
    assert out_of_range("training.network_dim", 32) is None
    assert out_of_range("dataset.resolution", (512, 10**6)) is not None  # tuples element by element
    assert out_of_range("no.such.field", math.nan) is not None  # finiteness even without a row
    assert LEASE_SECONDS.contains(3600) and not LEASE_SECONDS.contains(1e30)


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e999", math.nan, math.inf, 10**400])
def test_parse_refuses_non_finite_floats(raw):
    with pytest.raises(ConfigError, match="not a finite number"):
        convert(float, raw, "training.learning_rate")


def test_engine_config_holds_the_same_ranges():
    base = {"job_id": "j", "output_dir": "/o", "output_name": "x"}
    cfg = EngineConfig.from_dict({**base, "training": {"network_dim": 10**6}})
    with pytest.raises(ConfigError, match="training.network_dim"):
        cfg.validate()
    cfg = EngineConfig.from_dict({**base, "output_name": ".."})
    with pytest.raises(ConfigError, match="output_name"):
        cfg.validate()


def test_range_problems_lists_each_field_once():
    training = dataclasses.replace(SECTIONS["training"](), network_dim=0, batch_size=10**9, learning_rate=math.nan)
    problems = range_problems(training, "training")
    assert [p.split(":")[0] for p in problems] == [
        "training.batch_size",
        "training.learning_rate",
        "training.network_dim",
    ]
