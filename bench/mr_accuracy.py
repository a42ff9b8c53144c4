"""How often is the chosen candidate truly the better one, and at what cost in futures?

    python -m bench.mr_accuracy                  # about a minute; no network, no model
    python -m bench.mr_accuracy --turns 2000 --results /tmp/r.md

A scripted world: each turn has C candidates, each with a latent quality; each future of
a candidate is a fresh noisy draw around it, shaped like the default math recipe's MR:

    score = 1.0 * success + 0.5 * judge + token_penalty

- success: task success, 0/1, Bernoulli(p) (the task metric);
- judge: the interactivity judge on five anchors (0, .25, .5, .75, 1): the candidate's
  mean rating plus N(0, JUDGE_NOISE), rounded to the nearest anchor, clipped;
- token_penalty: -min(5e-4 * tokens, 1), tokens ~ N(mu, TOKEN_SPREAD * mu) for the
  candidate plus its future's assistant replies.

Latents: per turn a base success in U(0.2, 0.8) and a base rating in U(0.3, 0.8); per
candidate the base plus N(0, CANDIDATE_SPREAD) (clipped) and a token mean in U(200, 900).
A candidate's true MR is the exact expectation of its score (`true_mr`).

Each policy sees the same futures of the same turns (future k of a candidate is one fixed
draw, as the engine seeds future k by its index), and selects with the engine's code:
`collabgen.engine.racing` (the stopping rule, via `race_round`, as the engine calls it),
`Scorer.aggregate` (MR) and `selection.select_pairs` (best vs worst, kept when the gap is
at least `min_gap`; the pair's `confidence`). Measured per policy: pair accuracy (the
chosen candidate's true MR is higher), pairs kept per turn, futures and future calls per
kept pair. Future calls follow the engine's call plan at window w: per candidate and turn,
one request for the first round's first user replies (`n` of them), then per future w - 1
sequential messages and one judge call; every later future of an adaptive race adds its
own first-reply request, w - 1 messages and a judge call.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import norm

from bench.report import write_marked_section
from collabgen.engine.multiturn_reward import Scorer
from collabgen.engine.racing import candidate_options, race_round
from collabgen.engine.records import Candidate, Future
from collabgen.engine.selection import Selection, select_pairs

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- mr-accuracy:begin -->", "<!-- mr-accuracy:end -->"

WEIGHTS = {"success": 1.0, "judge": 0.5, "token_penalty": 1.0}
LEVELS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
JUDGE_NOISE = 0.2
TOKEN_SPREAD = 0.2
LAMBDA, CAP = 5e-4, 1.0
CANDIDATE_SPREAD = 0.12
WINDOW = 4
PER_FUTURE = (WINDOW - 1) + 1  # its w - 1 sequential messages and its judge call
MIN_GAP = 0.02


@dataclass(frozen=True)
class Latent:
    success: float
    rating: float
    tokens: float


@dataclass(frozen=True)
class Policy:
    name: str
    futures: int | None = None  # fixed S
    adaptive: tuple[int, int, float] | None = None  # (min_futures, max_futures, confidence)

    @property
    def most(self) -> int:
        return self.futures if self.adaptive is None else self.adaptive[1]


POLICIES = [
    # S = 1, 3, 5 are the issue's; 2, 4, 6, 7 make the fixed-S curve dense, so "fixed S at the same calls"
    # interpolates over short spans (accuracy is concave in S: a long linear span would flatter adaptive).
    *(Policy(f"fixed S={s}", futures=s) for s in range(1, 8)),
    Policy("adaptive 2..3 @0.8", adaptive=(2, 3, 0.8)), Policy("adaptive 2..4 @0.7", adaptive=(2, 4, 0.7)),
    Policy("adaptive 2..4 @0.8", adaptive=(2, 4, 0.8)), Policy("adaptive 2..6 @0.8", adaptive=(2, 6, 0.8)),
    Policy("adaptive 2..6 @0.9", adaptive=(2, 6, 0.9)), Policy("adaptive 3..8 @0.9", adaptive=(3, 8, 0.9)),
]


# --------------------------------------------------------------------------- the world


def latents(rng: np.random.Generator, c: int) -> list[Latent]:
    base_success, base_rating = rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.8)
    return [
        Latent(success=float(np.clip(base_success + rng.normal(0, CANDIDATE_SPREAD), 0.02, 0.98)),
               rating=float(np.clip(base_rating + rng.normal(0, CANDIDATE_SPREAD), 0.0, 1.0)),
               tokens=float(rng.uniform(200, 900)))
        for _ in range(c)
    ]


def draws(rng: np.random.Generator, latent: Latent, n: int) -> np.ndarray:
    """n futures' scores of one candidate."""
    success = (rng.random(n) < latent.success).astype(float)
    judge = np.clip(np.round((latent.rating + rng.normal(0, JUDGE_NOISE, n)) * 4) / 4, 0.0, 1.0)
    tokens = rng.normal(latent.tokens, TOKEN_SPREAD * latent.tokens, n)
    penalty = -np.minimum(LAMBDA * tokens, CAP)
    return WEIGHTS["success"] * success + WEIGHTS["judge"] * judge + WEIGHTS["token_penalty"] * penalty


def true_mr(latent: Latent) -> float:
    """The exact expected score: success, the anchor-rounded judge, the capped penalty."""
    edges = (LEVELS[:-1] + LEVELS[1:]) / 2
    cdf = norm.cdf((edges - latent.rating) / JUDGE_NOISE)
    probabilities = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    judge = float(probabilities @ LEVELS)
    mu, sd, cap = latent.tokens, TOKEN_SPREAD * latent.tokens, CAP / LAMBDA
    z = (mu - cap) / sd
    below_cap = mu - ((mu - cap) * norm.cdf(z) + sd * norm.pdf(z))  # E[min(tokens, cap)]
    return WEIGHTS["success"] * latent.success + WEIGHTS["judge"] * judge - WEIGHTS["token_penalty"] * LAMBDA * below_cap


# --------------------------------------------------------------------------- selecting


@dataclass
class Tally:
    turns: int = 0
    kept: int = 0
    right: int = 0
    best_found: int = 0
    futures: int = 0
    calls: int = 0
    confidence_sum: float = 0.0
    confidence_n: int = 0
    outcomes: list[int] = field(default_factory=list)  # per turn: -1 no pair kept, 0 wrong, 1 right

    @property
    def accuracy(self) -> float:
        return self.right / self.kept if self.kept else float("nan")


def candidate(scores: np.ndarray, k: int) -> Candidate:
    """A record with the first k futures of a candidate's stream."""
    made = Candidate(text="", tokens=0, proactive=False,
                     futures=[Future(messages=[], tokens=[], terminated=False, score=float(s)) for s in scores[:k]])
    Scorer.aggregate(made)
    return made


def race(streams: list[np.ndarray], policy: Policy) -> tuple[list[Candidate], int]:
    """The turn's candidates after the policy's futures, and the future calls they took."""
    if policy.adaptive is None:
        s = policy.futures or 1
        return [candidate(x, s) for x in streams], len(streams) * (1 + s * PER_FUTURE)
    first, most, confidence = policy.adaptive
    counts = [first] * len(streams)
    calls = len(streams) * (1 + first * PER_FUTURE)
    candidates = [candidate(x, first) for x in streams]
    while more := race_round(candidates, confidence, most):
        for i in more:
            counts[i] += 1
            candidates[i] = candidate(streams[i], counts[i])
        calls += len(more) * (1 + PER_FUTURE)
    return candidates, calls


Turn = tuple[list[float], list[np.ndarray]]
"""A turn as every policy sees it: its candidates' true MRs and each one's futures' scores."""


def play(policy: Policy, turns: list[Turn]) -> Tally:
    tally = Tally()
    selection = Selection(min_gap=MIN_GAP)
    for true, streams in turns:
        candidates, calls = race(streams, policy)
        for i, c in enumerate(candidates):
            c.text = f"candidate {i}"  # select_pairs refuses pairs of equal texts
        options = candidate_options(candidates)
        tally.turns += 1
        tally.futures += sum(len(c.futures) for c in candidates)
        tally.calls += calls
        ranked = max(options, key=lambda o: (o.score, -o.index))
        tally.best_found += int(true[ranked.index] == max(true))
        outcome = -1
        for chosen, rejected, sure in select_pairs(options, selection):
            outcome = int(true[chosen.index] > true[rejected.index])
            tally.kept += 1
            tally.right += outcome
            if sure.confidence is not None:
                tally.confidence_sum += sure.confidence
                tally.confidence_n += 1
        tally.outcomes.append(outcome)
    return tally


def world(c: int, turns: int, seed: int, most: int) -> list[Turn]:
    """The turns every policy sees, each candidate with `most` futures drawn."""
    rng = np.random.default_rng([seed, c])
    out = []
    for _ in range(turns):
        truth = latents(rng, c)
        out.append(([true_mr(t) for t in truth], [draws(rng, t, most) for t in truth]))
    return out


# --------------------------------------------------------------------------- report


def interval(right: int, n: int) -> str:
    if n == 0:
        return "n/a"
    p = right / n
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    return f"{p:.3f} ± {half:.3f}"


def table(results: dict[int, dict[str, Tally]]) -> list[str]:
    lines = ["| C | policy | pair accuracy (95%) | pairs kept / turn | futures / candidate | future calls / kept pair "
             "| future calls vs S=3 | best found | mean confidence |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c, by_policy in results.items():
        reference = by_policy["fixed S=3"].calls
        for name, t in by_policy.items():
            per_pair = t.calls / t.kept if t.kept else float("nan")
            confidence = f"{t.confidence_sum / t.confidence_n:.3f}" if t.confidence_n else "n/a"
            lines.append(f"| {c} | {name} | {interval(t.right, t.kept)} | {t.kept / t.turns:.3f} | "
                         f"{t.futures / (t.turns * c):.2f} | {per_pair:.1f} | {t.calls / reference:.2f}x | "
                         f"{t.best_found / t.turns:.3f} | {confidence} |")
    return lines


def paired(a: Tally, b: Tally) -> tuple[float, float, int]:
    """a's accuracy minus b's on the turns where both kept a pair (the same turns and
    futures): the mean difference, its 95% half-width and the number of such turns."""
    both = [(x, y) for x, y in zip(a.outcomes, b.outcomes) if x >= 0 and y >= 0]
    d = np.array([x - y for x, y in both], dtype=float)
    if len(d) < 2:
        return float("nan"), float("nan"), len(d)
    return float(d.mean()), float(1.96 * d.std(ddof=1) / math.sqrt(len(d))), len(d)


def fixed_at(by_policy: dict[str, Tally], calls: int) -> float | None:
    """Fixed S's accuracy at `calls`, linear between the fixed-S points (None outside them)."""
    points = sorted((t.calls, t.accuracy) for name, t in by_policy.items() if name.startswith("fixed"))
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= calls <= x1:
            return y0 + (y1 - y0) * (calls - x0) / (x1 - x0)
    return None


def verdict(results: dict[int, dict[str, Tally]]) -> list[str]:
    """The issue's goal on the numbers, with paired 95% intervals: S=3's accuracy (not shown
    lower) at <= 0.5x its future calls, or accuracy shown higher at no more calls."""
    lines = []
    for c, by_policy in results.items():
        s3 = by_policy["fixed S=3"]
        for name, t in by_policy.items():
            if not name.startswith("adaptive"):
                continue
            diff, half, n = paired(t, s3)
            ratio = t.calls / s3.calls
            cheap = ratio <= 0.5 and diff + half >= 0
            better = ratio <= 1.0 and diff - half > 0
            same_calls = fixed_at(by_policy, t.calls)
            curve = "outside the fixed-S range" if same_calls is None else f"{same_calls:.3f}"
            outcome = ("met: S=3's accuracy at <= 0.5x its calls" if cheap else
                       "met: higher accuracy at no more calls" if better else "not met")
            lines.append(f"- C={c}, {name}: accuracy {t.accuracy:.3f}, {diff:+.3f} ± {half:.3f} against S=3 "
                         f"(paired over {n} turns) at {ratio:.2f}x its future calls; fixed S at the same calls "
                         f"(interpolated): {curve}. Goal {outcome}.")
    return lines


def section(results: dict[int, dict[str, Tally]], command: str, turns: int, seconds: float) -> str:
    head = [
        BEGIN, "## MR accuracy: fixed S against adaptive futures", "",
        f"Produced by `{command}` in {seconds:.0f} s (no network, no model): {turns} turns per C, the same turns "
        f"and futures for every policy; window {WINDOW}, min_gap {MIN_GAP}, best-vs-worst pairs. The world, the "
        "columns and the call plan are in `bench/mr_accuracy.py`'s docstring; selection and the stopping rule are "
        "the engine's own code (`collabgen/engine/racing.py`, `selection.py`). `adaptive a..b @p`: min_futures a, "
        "max_futures b, confidence p. Pair accuracy: the chosen candidate's true MR is higher, over kept pairs "
        "(95% normal interval). Best found: the candidate ranked first is the truly best of its turn.", "",
    ]
    floor = (1 + 2 * PER_FUTURE) / (1 + 3 * PER_FUTURE)
    goal = [
        "Against the issue's goal (S=3's pair accuracy with <= 0.5x the future calls, or higher accuracy at equal "
        "calls), differences paired over the turns where both policies kept a pair:", "", *verdict(results), "",
        f"The 0.5x half of the goal is out of reach of this rule by construction: the pooled variance needs two "
        f"futures of some candidate (one each gives no estimate, so no race stops), and two futures per candidate "
        f"already cost {floor:.2f}x S=3's future calls.", "",
        "Reading: the paired differences compare against S=3 on the same turns and futures; \"fixed S at the same "
        "calls\" reads the fixed-S curve (S = 1..7, linear between neighbours) at the adaptive setting's own "
        "calls, which is the fair \"equal calls\" comparison for settings that spend more than S=3. This is one "
        "scripted world (its noise: a 0/1 task metric dominates each future's score); the gains depend on how "
        "the candidates' true gaps compare with that noise, and on a real workload they are not measured here.",
    ]
    return "\n".join([*head, *table(results), "", *goal, "", END, ""])


def write_section(path: Path, text: str) -> None:
    """Replace the marked section of RESULTS.md (or append it)."""
    write_marked_section(path, "mr-accuracy", text.replace(BEGIN, "").replace(END, ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=4000, help="turns per C")
    parser.add_argument("--candidates", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    most = max(p.most for p in POLICIES)
    results: dict[int, dict[str, Tally]] = {}
    for c in args.candidates:
        turns = world(c, args.turns, args.seed, most)
        results[c] = {p.name: play(p, turns) for p in POLICIES}
    command = " ".join(["python -m bench.mr_accuracy", *(argv or [])])
    text = section(results, command, args.turns, time.monotonic() - started)
    write_section(args.results, text)
    print(text)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
