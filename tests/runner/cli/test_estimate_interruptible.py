"""`lorarun estimate` shows both markets: on-demand and interruptible rows, each with its expected total."""

from __future__ import annotations

import json

from lorarun.runner.price import interruptible

from .test_estimate_cli import reference_job, run, vast  # noqa: F401 - the fake Vast API fixture


def test_json_carries_on_demand_and_interruptible_rows_with_expected_totals(vast, tmp_path, capsys):  # noqa: F811
    job = reference_job(tmp_path, "  interruptible: allowed\n  bid_margin: 0.2")
    code, out, err = run(capsys, "estimate", str(job), "--json", "--top", "40")
    assert code == 0, err
    rows = [r for r in json.loads(out)["offers"] if r["rank"] is not None]
    spot = [r for r in rows if r["interruptible"]]
    steady = [r for r in rows if not r["interruptible"]]
    assert spot and steady
    for r in steady:
        assert r["expected_total_cost"] == r["total_cost"] and r["interruption_rate_per_hour"] is None
    for r in spot:
        assert r["expected_total_cost"] > r["total_cost"]
        assert r["interruption_rate_per_hour"] == interruptible.PRIOR_RATE_PER_HOUR["vastai"]
        assert "assumed" in r["interruption_rate_source"]
        # The bid: the offer's min_bid plus the margin.
        assert r["price_per_hour"] == round(vast.offers[int(r["offer_id"])]["min_bid"] * 1.2, 4)
    # Ranked by expected total ("allowed"): the list is in that order.
    assert [r["expected_total_cost"] for r in rows] == sorted(r["expected_total_cost"] for r in rows)


def test_the_table_shows_both_prices_side_by_side(vast, tmp_path, capsys):  # noqa: F811
    job = reference_job(tmp_path, "  interruptible: prefer")
    code, out, err = run(capsys, "estimate", str(job))
    assert code == 0, err
    assert "(interruptible)" in out and "expected $" in out
    assert "assumed 0.15/h" in out


def test_a_job_that_never_allows_them_shows_them_excluded(vast, tmp_path, capsys):  # noqa: F811
    code, out, err = run(capsys, "estimate", str(reference_job(tmp_path)), "--json", "--top", "40")
    assert code == 0, err
    data = json.loads(out)
    spot = [r for r in data["offers"] if r["interruptible"]]
    assert spot and all(r["rank"] is None and "interruptible" in r["excluded"] for r in spot)
    assert not data["cheapest"]["interruptible"]
