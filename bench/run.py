"""The collabgen benchmark: wall time against the call-count lower bound, on a local server.

    python -m bench.run            # everything below, writes bench/RESULTS.md (about 5 minutes)
    python -m bench.run --seeds 8 --candidates 2 --only-grid --results /tmp/r.md   # a quick look

Each workload (N seeds x C candidates, S futures, window w, T max turns) gets a fresh
fake OpenAI server (`bench.server`, its own process: latency L per call, K processing
slots, the rest queue) and a fresh engine process (`bench.engine`); `bench.metrics`
turns the server's call log, the engine's own measurements and the run's manifest into
figures, and `bench.report` writes them. Every figure in the report is measured by this
one invocation:

1. the grid N x C at (L, K);
2. a latency sweep on one workload, to show where the engine stops being the limit;
3. the client floor: CPU per call of the model stack alone (`bench.client_floor`);
4. a profile of one workload (py-spy when installed, else cProfile), folded into components;
5. calls per conversation at C=2, S=3, window 4, T=6, with and without the reuse of the
   chosen future, next to the CollabLLM reference (115).

Lower bound of a run (DESIGN section 4):

    bound = max(critical_path_calls * L, total_calls * L / K)
    critical_path_calls = 1 + T * (w + 2)

(opener; per turn: the candidate request, the futures' first user reply, the w-1
sequential future messages, the judge); total_calls = what the server served.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import profile as profiling
from bench.metrics import compute_metrics
from bench.report import REFERENCE_CALLS, fmt, write_report
from tests.helpers import math_recipe, write_recipe

ROOT = Path(__file__).resolve().parent.parent
FUTURES = 3
WINDOW = 4


@dataclass(frozen=True)
class Setup:
    latency: float  # L
    per_token_latency: float
    slots: int  # K
    conversations_factor: int  # generation.conversations = min(N, factor * K)
    work: Path
    seeds_file: Path

    def conversations(self, seeds: int) -> int:
        return max(1, min(seeds, self.conversations_factor * self.slots))


@dataclass(frozen=True)
class Workload:
    seeds: int  # N
    candidates: int  # C
    max_turns: int  # T
    futures: int = FUTURES  # S
    window: int = WINDOW  # w
    reuse_futures: bool = True
    profile: str = "none"  # none | py-spy | cprofile
    label: str = ""

    def name(self, setup: Setup) -> str:
        return (f"N{self.seeds}-C{self.candidates}-S{self.futures}-w{self.window}-T{self.max_turns}"
                f"-L{setup.latency * 1000:g}ms-K{setup.slots}{self.label}")

    def critical_path_calls(self) -> int:
        return 1 + self.max_turns * (1 + 1 + (self.window - 1) + 1)


@dataclass
class Measured:
    setup: Setup
    workload: Workload
    conversations: int
    engine: dict[str, Any]
    server: dict[str, Any]
    manifest: dict[str, Any]
    out_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- running


def write_seeds(path: Path, count: int) -> None:
    """Synthetic MATH-style seeds the scripted roles can play: `What is a + b?`."""
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(count):
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            row = {"problem": f"What is {a} + {b}?", "solution": f"Add them: $\\boxed{{{a + b}}}$.",
                   "level": "Level 1", "type": "Prealgebra"}
            handle.write(json.dumps(row) + "\n")


class Server:
    """`bench.server` in its own process, for one workload."""

    def __init__(self, setup: Setup) -> None:
        cmd = [sys.executable, "-m", "bench.server", "--latency", str(setup.latency),
               "--per-token-latency", str(setup.per_token_latency), "--max-concurrency", str(setup.slots)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"bench server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def log(self) -> dict[str, Any]:
        doc = get_json(f"{self.url}/bench/calls")
        doc["runqueue_wait_seconds"] = _schedstat_wait(self.proc.pid)
        return doc

    def reset(self) -> None:
        get_json(f"{self.url}/bench/reset")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _schedstat_wait(pid: int) -> float:
    """Run-queue wait of every thread of `pid`, seconds."""
    total = 0.0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        pass
    return total


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=120) as response:
        return json.loads(response.read())


def run_workload(setup: Setup, workload: Workload) -> Measured:
    name = workload.name(setup)
    out = setup.work / name
    shutil.rmtree(out, ignore_errors=True)  # a kept request cache would answer every call
    out.mkdir(parents=True)
    conversations = setup.conversations(workload.seeds)
    with Server(setup) as server:
        before = server.log()
        recipe = math_recipe(
            f"{server.url}/v1", out / "out",
            **{
                "task.source.path": str(setup.seeds_file),
                "task.limit": workload.seeds,
                "generation.candidates": workload.candidates,
                "generation.futures": workload.futures,
                "generation.window": workload.window,
                "generation.max_turns": workload.max_turns,
                "generation.conversations": conversations,
                "generation.reuse_futures": workload.reuse_futures,
                "output.rows_per_shard": 1000,
            },
        )
        for role in recipe["models"].values():
            role["concurrency"] = setup.slots  # each role alone can fill every server slot
            role["timeout"] = 120
        recipe_path = write_recipe(out / "recipe.yaml", recipe)
        result_path = out / "engine.json"
        cmd = [sys.executable, "-m", "bench.engine", str(recipe_path), str(result_path)]
        if workload.profile == "cprofile":
            cmd += ["--profile", "cprofile"]
        elif workload.profile == "py-spy":
            cmd = profiling.py_spy_command(out / "py-spy.txt") + cmd
        engine = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if engine.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"engine failed on {name}:\n{engine.stderr[-3000:]}")
        served = server.log()
    served["cpu_seconds"] -= before["cpu_seconds"]
    served["runqueue_wait_seconds"] -= before["runqueue_wait_seconds"]
    (out / "calls.json").write_text(json.dumps(served), encoding="utf-8")
    engine_result = json.loads(result_path.read_text(encoding="utf-8"))
    manifest = json.loads((Path(engine_result["out_dir"]) / "manifest.json").read_text(encoding="utf-8"))
    measured = Measured(setup, workload, conversations, engine_result, served, manifest, Path(engine_result["out_dir"]))
    measured.metrics = compute_metrics(measured)
    return measured


def import_seconds() -> float:
    """Seconds a fresh process takes to import collabgen's OpenAI backend (the openai SDK)."""
    code = ("import time; t = time.perf_counter(); import collabgen.models.openai_backend; "
            "print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def run_client_floor(setup: Setup, calls: int) -> dict[str, Any]:
    with Server(setup) as server:
        result = setup.work / "client_floor.json"
        cmd = [sys.executable, "-m", "bench.client_floor", f"{server.url}/v1", str(result),
               "--calls", str(calls), "--in-flight", str(2 * setup.slots)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"client floor failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- main


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def say(m: Measured) -> None:
    x = m.metrics
    print(f"{m.workload.name(m.setup)}: {x['total_calls']} calls, wall {x['wall']:.2f}s, bound {x['bound']:.2f}s, "
          f"eff {x['efficiency']:.2f} (calls phase {x['efficiency_calls']:.2f}), occupancy {fmt(x['occupancy'])}, "
          f"engine CPU {100 * x['engine_cpu_share']:.0f}% {x['engine_cpu_ms_per_call']:.2f} ms/call, "
          f"peak RSS {x['peak_rss_mib']:.0f} MiB", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="collabgen benchmark: wall time vs the call-count lower bound")
    parser.add_argument("--latency", type=float, default=0.05, help="L, seconds per call")
    parser.add_argument("--per-token-latency", type=float, default=0.0, help="extra seconds per completion token")
    parser.add_argument("--slots", type=int, default=32, help="K, the server's processing slots")
    parser.add_argument("--seeds", type=parse_ints, default=[8, 64, 512], help="N values")
    parser.add_argument("--candidates", type=parse_ints, default=[2, 3], help="C values")
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--conversations-factor", type=int, default=2,
                        help="generation.conversations = min(N, factor * K)")
    parser.add_argument("--sweep-latencies", type=parse_floats, default=[0.1, 0.2],
                        help="extra L values for the sweep workload (N=64, largest C)")
    parser.add_argument("--floor-calls", type=int, default=1500)
    parser.add_argument("--profiler", choices=["auto", "py-spy", "cprofile"], default="auto")
    parser.add_argument("--only-grid", action="store_true", help="skip sweep, floor, profile and reuse")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--work", type=Path, default=None, help="keep workload dirs here (default: a temp dir)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    command = "python -m bench.run" + (" " + shlex.join(sys.argv[1:] if argv is None else argv)
                                       if (sys.argv[1:] if argv is None else argv) else "")
    with tempfile.TemporaryDirectory(prefix="collabgen-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        seeds_file = work / "math_seeds.jsonl"
        write_seeds(seeds_file, max([*args.seeds, 64]))
        setup = Setup(args.latency, args.per_token_latency, args.slots, args.conversations_factor, work, seeds_file)
        results = []
        for c in args.candidates:
            for n in args.seeds:
                results.append(run_workload(setup, Workload(seeds=n, candidates=c, max_turns=args.max_turns)))
                say(results[-1])
        sweep, floor, profiled, reuse = [], None, None, None
        if not args.only_grid:
            sweep_workload = Workload(seeds=64, candidates=max(args.candidates), max_turns=args.max_turns)
            for latency in args.sweep_latencies:
                sweep.append(run_workload(replace(setup, latency=latency), sweep_workload))
                say(sweep[-1])
            floor = run_client_floor(setup, args.floor_calls)
            floor["import_seconds"] = import_seconds()
            print("client floor:", json.dumps(floor), flush=True)
            tool = args.profiler if args.profiler != "auto" else ("py-spy" if profiling.have_py_spy() else "cprofile")
            target = replace(sweep_workload, profile=tool, label=f"-{tool}")
            m = run_workload(setup, target)
            folded = (profiling.fold_py_spy(m.out_dir.parent / "py-spy.txt") if tool == "py-spy"
                      else profiling.fold_cprofile(m.out_dir.parent / "engine.prof"))
            profiled = (m, folded)
            say(m)
            reference = Workload(seeds=16, candidates=2, max_turns=6, label="-reference")
            reuse = (run_workload(setup, reference),
                     run_workload(setup, replace(reference, reuse_futures=False, label="-reference-noreuse")))
            print(f"calls per conversation at C=2, S=3, w=4, T=6: {reuse[0].metrics['calls_per_conversation']} "
                  f"(reuse off {reuse[1].metrics['calls_per_conversation']}; CollabLLM reference "
                  f"{REFERENCE_CALLS})", flush=True)
        elapsed = time.monotonic() - started
        text = write_report(args.results, command, setup, args.max_turns, elapsed, results, sweep, floor, profiled,
                            reuse)
    print()
    print(text)
    print(f"\nwrote {args.results} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
