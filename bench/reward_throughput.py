"""Online reward throughput: how fast `collabgen.reward` scores a trainer's batch, against
the bound the server's latency and slots allow.

    python -m bench.reward_throughput                      # 64 completions, L = 50 ms, K = 32
    python -m bench.reward_throughput --batch 128 --latency 0.05 --slots 64

A fresh `bench.server` process (the scripted math roles, latency L per call, K processing
slots) serves the user simulator and the judge; the futures' assistant turns go to the
same server. One `MultiturnReward.score_batch` of B completions is timed, cold (no cache),
and again warm (every request a cache hit). The bound of the cold batch is

    max(critical_path_calls * L, total_calls * L / K)

with the critical path one completion's longest chain of dependent calls (a future's first
user reply, its w-1 alternating messages, the judge: w + 1) and `total_calls` what the
server served. Efficiency = bound / measured; 0.9 is the goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.report import write_marked_section
from bench.run import Server, Setup

POLICY, USER, JUDGE = "policy-model", "user-sim", "judge-model"


def recipe(url: str, out: Path, seeds: Path, window: int, futures: int, concurrency: int) -> Path:
    role = {"backend": "openai", "base_url": url, "max_retries": 2, "timeout": 30, "concurrency": concurrency}
    data: dict[str, Any] = {
        "task": {"type": "math", "source": {"path": str(seeds)}},
        "models": {"policy": {**role, "model": POLICY}, "user": {**role, "model": USER},
                   "judge": {**role, "model": JUDGE}},
        "generation": {"candidates": 2, "futures": futures, "window": window, "max_turns": 3},
        "reward": {"weights": {"accuracy": 1.0, "interactivity": 0.5, "token_penalty": 1.0},
                   "token_penalty": {"lambda": 5.0e-4, "cap": 1.0}},
        "output": {"dir": str(out)},
    }
    path = out.parent / "reward.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def items(batch: int) -> list[tuple[list[dict[str, str]], str, dict[str, str]]]:
    """B completions over B/4 seeds: a clarifying question or an answer, right or wrong."""
    rng = random.Random(11)
    out = []
    for i in range(batch):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        problem = f"What is {a} + {b}?"
        answer = a + b + (i % 2)
        completion = (f"Let me work it out step by step. The answer is $\\boxed{{{answer}}}$." if i % 3 else
                      "Before I solve it: do you want an exact value or a decimal approximation?")
        seed = {"problem": problem, "solution": f"Add them: $\\boxed{{{a + b}}}$."}
        out.append(([{"role": "user", "content": f"hey, can you help me with this: {problem}"}], completion, seed))
    return out


def critical_path(window: int) -> int:
    """One completion's longest chain of dependent calls: its futures' first user replies (one
    request, n = S), the w-1 messages that alternate after it, one at a time, then the judges
    (interactivity and the task's, side by side). Futures that end early only shorten it."""
    return 1 + (window - 1) + 1


async def score(path: Path, batch: list[Any]) -> tuple[float, list[Any]]:
    from collabgen.reward import MultiturnReward

    async with MultiturnReward.from_recipe(path) as reward:
        started = time.perf_counter()
        results = await reward.score_batch(batch)
        return time.perf_counter() - started, results


def _measure(server: Server, work: Path, seeds: Path, args: argparse.Namespace) -> tuple[Any, ...]:
    """The batch scored cold, then again warm; the call log of the cold one."""
    path = recipe(f"{server.url}/v1", work / "out", seeds, args.window, args.futures, 4 * args.slots)
    batch = items(args.batch)
    server.reset()
    cold, results = asyncio.run(score(path, batch))
    log = server.log()
    served = sum(1 for row in log["calls"] if row[1] == 200)
    warm, again = asyncio.run(score(path, batch))
    rewarm = sum(1 for row in server.log()["calls"] if row[1] == 200) - served
    return cold, warm, results, again, log, rewarm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--futures", type=int, default=3)
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md",
                        help="the RESULTS.md whose reward-throughput section to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seeds = Path(tmp) / "seeds.jsonl"
        seeds.write_text(json.dumps({"problem": "What is 2 + 3?", "solution": "$\\boxed{5}$"}) + "\n")
        setup = Setup(latency=args.latency, per_token_latency=0.0, slots=args.slots, conversations_factor=1,
                      work=Path(tmp), seeds_file=seeds)
        with Server(setup) as server:
            cold, warm, results, again, log, rewarm = _measure(server, Path(tmp), seeds, args)
    served = [row for row in log["calls"] if row[1] == 200]
    chain = critical_path(args.window)
    bound = max(chain * args.latency, len(served) * args.latency / args.slots)
    failed = sum(r.score is None for r in results)
    lines = [f"batch {args.batch} completions, S = {args.futures}, w = {args.window}, L = {args.latency * 1000:.0f} ms, "
          f"K = {args.slots}",
             f"cold: {cold:.2f} s ({args.batch / cold:.1f} rewards/s), {len(served)} calls served, critical path "
          f"{chain} calls; bound max({chain} x L, {len(served)} x L / K) = {bound:.2f} s; efficiency "
          f"{bound / cold:.2f}; {failed} without a reward",
             f"warm (same batch again): {warm:.3f} s ({args.batch / warm:.0f} rewards/s), {rewarm} new calls, "
          f"same rewards: {[r.score for r in again] == [r.score for r in results]}"]
    print("\n".join(lines))
    if args.results is not None:
        write_marked_section(args.results, "reward-throughput", "\n".join([
            "## Online reward throughput", "",
            f"`python -m bench.reward_throughput --batch {args.batch} --latency {args.latency} --slots {args.slots}`:", "",
            *(f"- {line}" for line in lines)]))


if __name__ == "__main__":
    main()
