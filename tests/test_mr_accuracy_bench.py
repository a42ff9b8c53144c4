"""`python -m bench.mr_accuracy`: its world's truth is the expectation of its draws, its
fixed-S policies spend what the engine's call plan says, and it writes its own section."""

from __future__ import annotations

import numpy as np
import pytest

from bench import mr_accuracy
from bench.mr_accuracy import Latent, Policy, draws, race, true_mr


@pytest.mark.parametrize("latent", [Latent(0.3, 0.45, 300.0), Latent(0.9, 0.1, 2200.0), Latent(0.5, 0.95, 800.0)])
def test_the_true_mr_is_the_mean_of_many_futures(latent):
    scores = draws(np.random.default_rng(1), latent, 400_000)
    assert true_mr(latent) == pytest.approx(scores.mean(), abs=4 * scores.std() / np.sqrt(len(scores)))


def test_adaptive_stops_early_on_a_clear_turn_and_fixed_s_spends_its_plan():
    clear = [np.array([1.5, 1.5, 1.5, 1.5]), np.array([0.0, 0.0, 0.0, 0.0])]
    candidates, calls = race(clear, Policy("a", adaptive=(2, 4, 0.9)))
    assert [len(c.futures) for c in candidates] == [2, 2] and calls == 2 * (1 + 2 * 4)
    tie = [np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0, 1.0])]
    candidates, calls = race(tie, Policy("a", adaptive=(2, 4, 0.9)))
    assert [len(c.futures) for c in candidates] == [4, 4] and calls == 2 * (1 + 2 * 4) + 4 * (1 + 4)
    candidates, calls = race(tie, Policy("s", futures=3))
    assert [c.score for c in candidates] == [pytest.approx(2 / 3), pytest.approx(1 / 3)] and calls == 2 * (1 + 3 * 4)


def test_the_bench_writes_its_section_once_and_keeps_the_rest(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n\nother section\n", encoding="utf-8")
    for _ in range(2):
        mr_accuracy.main(["--turns", "20", "--results", str(results)])
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# results\n\nother section\n") and text.count(mr_accuracy.BEGIN) == 1
    for policy in mr_accuracy.POLICIES:
        assert f"| 2 | {policy.name} |" in text and f"| 3 | {policy.name} |" in text
