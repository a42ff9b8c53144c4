"""MR confidence: the candidates' noise, the pairs' confidence, `export --min-confidence`,
and the manifest's and `inspect`'s view of it, on a real run against the scripted server."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import polars as pl
import pytest
from scipy import stats

from collabgen.engine.confidence import Spread, pair_confidence, sample_std
from collabgen.engine.selection import Option, Selection, select_pairs
from tests.test_inspect_export import make_run, run_cli


def spread(scores: list[float]) -> Spread:
    return Spread(score=sum(scores) / len(scores), std=sample_std(scores), n=len(scores))


def test_two_candidates_give_students_one_sided_t_test():
    chosen, rejected = [0.9, 0.7, 0.8], [0.6, 0.75, 0.5]
    sure = pair_confidence(spread(chosen), spread(rejected), [spread(chosen), spread(rejected)])
    p_value = stats.ttest_ind(chosen, rejected, equal_var=True, alternative="greater").pvalue
    assert sure.confidence == pytest.approx(1 - p_value, abs=1e-12)
    assert sure.gap == pytest.approx(0.8 - 0.6167, abs=1e-3)


def test_the_variance_is_pooled_over_every_candidate_of_the_turn():
    a, b, c = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.8, 0.5]  # a and b alone: no spread at all
    turn = [spread(a), spread(b), spread(c)]
    sure = pair_confidence(turn[0], turn[2], turn)
    s2 = (0 + 0 + 2 * statistics.variance(c)) / 6  # df = 3 * (3 - 1)
    se = math.sqrt(s2 * (1 / 3 + 1 / 3))
    assert sure.gap_se == pytest.approx(se)
    assert sure.confidence == pytest.approx(stats.t.cdf((1.0 - 0.5) / se, 6))
    assert 0.5 < sure.confidence < 1.0


def test_no_spread_and_no_estimate():
    same_high, same_low = spread([1.0, 1.0]), spread([0.0, 0.0])
    assert pair_confidence(same_high, same_low, [same_high, same_low]).confidence == 1.0
    assert pair_confidence(same_low, same_low, [same_low, same_low]).confidence == 0.5
    one, other = spread([1.0]), spread([0.0])  # one future each: nothing to estimate the noise from
    sure = pair_confidence(one, other, [one, other])
    assert sure.confidence is None and sure.gap_se is None and sure.gap == 1.0


def test_min_confidence_drops_unsure_pairs_and_pairs_without_an_estimate():
    noisy = [Option(0, 0.8, "a", std=0.5, futures=3), Option(1, 0.6, "b", std=0.5, futures=3)]
    clear = [Option(0, 0.8, "a", std=0.01, futures=3), Option(1, 0.6, "b", std=0.01, futures=3)]
    unknown = [Option(0, 0.8, "a", futures=1), Option(1, 0.6, "b", futures=1)]
    rule = Selection(min_gap=0.0, min_confidence=0.9)
    assert select_pairs(noisy, rule) == []
    assert len(select_pairs(clear, rule)) == 1
    assert select_pairs(unknown, rule) == []
    assert len(select_pairs(unknown, Selection(min_gap=0.0))) == 1  # no threshold: kept, confidence unknown


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("conf"), **{"generation.candidates": 3, "generation.futures": 3})


def test_rows_carry_the_noise_of_every_mr(run):
    candidates = pl.read_parquet(sorted((run / "candidates").glob("*.parquet")))
    pairs = pl.read_parquet(sorted((run / "pairs").glob("*.parquet")))
    assert pairs.height > 0
    for row in candidates.iter_rows(named=True):
        scores = [f["score"] for f in row["futures"]]
        assert row["n_futures"] == len(scores) == 3
        assert row["score_std"] == pytest.approx(statistics.stdev(scores), abs=1e-12)
        assert row["score_se"] == pytest.approx(statistics.stdev(scores) / math.sqrt(3), abs=1e-12)
    by_turn = {}
    for row in candidates.iter_rows(named=True):
        by_turn.setdefault((row["conv_id"], row["turn"]), []).append(row)
    for pair in pairs.iter_rows(named=True):
        turn = by_turn[(pair["conv_id"], pair["turn"])]
        futures = [[f["score"] for f in c["futures"]] for c in turn]
        chosen = next(c for c in turn if c["response"] == pair["chosen"][0]["content"]
                      and c["score"] == pair["score_chosen"])
        rejected = next(c for c in turn if c["response"] == pair["rejected"][0]["content"]
                        and c["score"] == pair["score_rejected"])
        assert pair["gap"] == pytest.approx(chosen["score"] - rejected["score"])
        # The pooled within-turn variance is one-way ANOVA's mean square within.
        df = sum(len(f) - 1 for f in futures)
        ms_within = sum(statistics.variance(f) * (len(f) - 1) for f in futures) / df
        se = math.sqrt(ms_within * (2 / 3))
        assert pair["gap_se"] == pytest.approx(se, abs=1e-12)
        expected = 1.0 if se == 0 else stats.t.cdf(pair["gap"] / se, df)
        assert pair["confidence"] == pytest.approx(expected, abs=1e-12)


def test_export_min_confidence_reselects_and_the_manifest_and_inspect_show_it(run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run, out)
    pairs = pl.read_parquet(sorted((out / "pairs").glob("*.parquet")))
    manifest = json.loads((out / "manifest.json").read_text())
    summary = manifest["confidence"]
    assert summary["pairs_with_estimate"] == pairs["confidence"].drop_nulls().len()
    assert summary["at_least"]["0.9"] == int((pairs["confidence"] >= 0.9).sum())

    threshold = float(pairs["confidence"].median())
    result = run_cli("export", str(out), "--min-confidence", str(threshold))
    assert result.exit_code == 0, result.output
    kept = pl.read_parquet(sorted((out / "pairs").glob("*.parquet")))
    assert 0 < kept.height <= pairs.height
    assert kept["confidence"].min() >= threshold
    assert kept.height == int((pairs["confidence"] >= threshold).sum())
    after = json.loads((out / "manifest.json").read_text())
    assert after["export"]["min_confidence"] == threshold
    assert after["counts"]["pairs"] == kept.height
    assert after["confidence"]["pairs_with_estimate"] == kept.height

    shown = run_cli("inspect", str(out))
    assert shown.exit_code == 0, shown.output
    assert "pair confidence" in shown.output

    bad = run_cli("export", str(out), "--min-confidence", "1.5")
    assert bad.exit_code == 2 and "--min-confidence" in bad.output
