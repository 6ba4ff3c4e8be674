"""`lorarun gc` never says "nothing found" about providers it did not look at (issue 23.3): it names the providers
it searched and those it skipped or could not reach, and exits non-zero when no rented provider was searched."""

from __future__ import annotations

import pytest
from fakes.vast_server import API_KEY, FakeVast

from lorarun.runner.cli.app import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_gc_without_any_key_says_what_it_skipped_and_fails(capsys):
    code, out, err = run(capsys, "gc")
    assert code == 2
    assert "no lorarun instances found on local" in out
    assert "gc: looked at local; skipped vastai (no API key); skipped runpod (no API key)" in err
    assert "error: gc could search no rented provider" in err and "VAST_API_KEY" in err


def test_gc_with_one_key_searches_it_and_names_the_one_skipped(capsys, monkeypatch):
    with FakeVast() as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        monkeypatch.setenv("VAST_API_KEY", API_KEY)
        code, out, err = run(capsys, "gc")
    assert code == 0, err
    assert "no lorarun instances found on local, vastai" in out
    assert "skipped runpod (no API key)" in err


def test_gc_when_a_provider_does_not_answer_exits_1_naming_it(capsys, monkeypatch):
    from lorarun.provider_adapters.retry import RetryPolicy
    from lorarun.runner.run import connect

    monkeypatch.setattr(connect, "PROVIDER_OPTIONS", {"policy": RetryPolicy(max_attempts=1), "sleep": lambda s: None})
    with FakeVast() as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        monkeypatch.setenv("VAST_API_KEY", API_KEY)
        fake.fail_next("GET", "/api/v", status=503, times=10)  # the instance lists (v0 and v1) are down
        code, out, err = run(capsys, "gc", "-p", "local", "-p", "vastai")
    assert code == 1
    assert "could not see vastai" in err and "error: vastai: could not list its instances" in err
    assert "no lorarun instances found on local" in out


@pytest.mark.parametrize("named", ["vastai", "runpod"])
def test_gc_for_a_named_provider_without_a_key_lists_where_it_looked(capsys, named):
    code, _, err = run(capsys, "gc", "-p", named)
    assert code == 2 and f"No {named} API key found" in err and f"[{named}]" in err
