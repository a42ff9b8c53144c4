"""bench/RESULTS.md: tables of the measured workloads, the facts the prose rests on, and the prose.

The prose is `bench/interpretation.md` with `{name}` placeholders, filled from `gather_facts`,
so every number in the report comes from the run that wrote it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import profile as profiling
from bench.metrics import answer_check_repeats

if TYPE_CHECKING:
    from bench.run import Measured, Setup

REFERENCE_CALLS = 115  # CollabLLM reference code, C=2, S=3, window 4, history cap 6 (DESIGN section 4)
REFERENCE_PER_CANDIDATE_TURN = 2 + 12 + 6  # its accounting: candidate calls + simulated messages + judge calls


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results: list[Measured]) -> str:
    header = ["N", "C", "L (ms)", "K", "conv. in flight", "calls served", "crit. path calls", "bound (s)",
              "bound by", "wall (s)", "efficiency", "eff. (calls phase)", "occupancy (steady)", "steady (s)",
              "occupancy (whole)", "engine CPU ms/call", "CPU demand (cores)", "RSS calls phase / peak (MiB)"]
    rows = []
    for m in results:
        x = m.metrics
        rows.append([
            str(m.workload.seeds), str(m.workload.candidates), f"{m.setup.latency * 1000:g}", str(m.setup.slots),
            str(m.conversations), str(x["total_calls"]), str(x["critical_path_calls"]), f"{x['bound']:.2f}",
            x["bound_kind"], f"{x['wall']:.2f}", f"**{x['efficiency']:.2f}**", f"{x['efficiency_calls']:.2f}",
            f"**{fmt(x['occupancy'])}**", f"{x['steady_seconds']:.2f}", f"{x['occupancy_whole']:.2f}",
            f"{x['engine_cpu_ms_per_call']:.2f}", f"{x['cpu_demand_cores']:.2f}",
            f"{x['calls_rss_mib']:.0f} / {x['peak_rss_mib']:.0f}",
        ])
    return md_table(header, rows)


def cost_table(results: list[Measured]) -> str:
    header = ["N", "C", "L (ms)", "conv. ok", "turns", "pairs", "calls/pair", "tokens/pair", "calls/conv.",
              "engine CPU (s)", "engine CPU busy", "engine run-queue wait (s)", "server CPU ms/call",
              "server run-queue wait (s)", "load avg", "RSS before (MiB)", "RSS in calls phase (MiB)",
              "peak RSS (MiB)", "prefix meter (MiB)"]
    rows = []
    for m in results:
        x = m.metrics
        rows.append([
            str(m.workload.seeds), str(m.workload.candidates), f"{m.setup.latency * 1000:g}",
            str(x["conversations_ok"]), str(x["turns"]), str(x["pairs"]), fmt(x["calls_per_pair"], 1),
            fmt(x["tokens_per_pair"], 0), fmt(x["calls_per_conversation"], 1), f"{m.engine['cpu_seconds']:.1f}",
            f"{100 * x['engine_cpu_share']:.0f}%", f"{x['engine_runqueue_wait']:.1f}",
            f"{x['server_cpu_ms_per_call']:.2f}", f"{x['server_runqueue_wait']:.1f}", fmt(x["loadavg"]),
            f"{x['rss_before_mib']:.0f}", f"{x['calls_rss_mib']:.0f}", f"{x['peak_rss_mib']:.0f}",
            f"{x['prefix_meter_mib']:.1f}",
        ])
    return md_table(header, rows)


def timing_table(results: list[Measured]) -> str:
    header = ["N", "C", "L (ms)", "before 1st call (s)", "ramp to K busy (s)", "steady (s)", "tail (s)",
              "after last call (s)", "served calls/s", "K/L calls/s", "mean requests at server",
              "mean busy slots", "idle slots, request queued (server)", "idle slots, none queued (engine)",
              "mean send lag (ms)", "mean queue wait (ms)", "mean service (ms)"]
    rows = []
    for m in results:
        x = m.metrics
        rows.append([
            str(m.workload.seeds), str(m.workload.candidates), f"{m.setup.latency * 1000:g}",
            f"{x['pre_seconds']:.2f}", fmt(x["ramp_seconds"]), f"{x['steady_seconds']:.2f}", fmt(x["tail_seconds"]),
            f"{x['post_seconds']:.2f}", f"{x['served_per_second']:.0f}", f"{m.setup.slots / m.setup.latency:.0f}",
            f"{x['mean_in_server']:.1f}", f"{x['mean_processing']:.1f}", fmt(x["idle_server_side"], 3),
            fmt(x["idle_engine_side"], 3), f"{x['mean_send_lag_ms']:.0f}", f"{x['mean_queue_wait_ms']:.0f}",
            f"{x['mean_service_ms']:.1f}",
        ])
    return md_table(header, rows)


def floor_table(floor: dict[str, Any], engine_ms: float) -> str:
    rows = [[layer, f"{v['cpu_ms_per_call']:.2f}", f"{v['calls_per_second']:.0f}"] for layer, v in floor.items()
            if isinstance(v, dict)]
    rows.append(["whole engine (grid, largest workload)", f"{engine_ms:.2f}", "-"])
    return md_table(["layer", "CPU ms per call", "calls/s reached"], rows)


def profile_section(m: Measured, folded: dict[str, Any]) -> str:
    total = folded["total"] or 1
    x = m.metrics
    if folded["tool"] == "py-spy":  # wall-clock samples of the loop thread
        per_call, what = 1000 * x["wall"] / x["total_calls"], "≈ loop ms per call"
    else:
        per_call, what = x["engine_cpu_ms_per_call"], "≈ CPU ms per call"
    comps = [[name, f"{value:.0f}" if isinstance(value, int) else f"{value:.2f}", f"{100 * value / total:.1f}%",
              f"{per_call * value / total:.2f}"] for name, value in folded["components"]]
    leaves = [[f"`{name}`", f"{100 * value / total:.1f}%"] for name, value in folded["leaves"]]
    spots = []
    if folded.get("spots"):
        spots = ["Inclusive share of the functions the suggestions target:", "",
                 md_table(["function", "share of all samples"],
                          [[label, f"{100 * value / total:.1f}%"] for label, value in folded["spots"]]), ""]
    return "\n".join([
        f"{folded['tool']} on {m.workload.name(m.setup)} (same command; the profiler slows the engine: wall "
        f"{x['wall']:.2f} s for {x['total_calls']} calls, {x['engine_cpu_ms_per_call']:.2f} CPU ms per call). "
        + ("Samples of the event-loop thread, busy or idle; each busy sample is charged to the deepest frame "
           "of a known component, so json/ssl/socket/typing work is charged to its caller."
           if folded["tool"] == "py-spy" else "cProfile self time grouped by file (per-call overhead inflated)."),
        "",
        md_table(["component", folded["unit"], "share", what], comps),
        "",
        *spots,
        "Hottest leaf functions (busy samples):",
        "",
        md_table(["function", "share of all samples"], leaves),
    ])


def reuse_upper(m: Measured) -> float:
    """`collabgen plan`'s calls per conversation for the run's recipe (every turn played, no early end)."""
    import asyncio

    from collabgen.app.context import prepare
    from collabgen.app.plan import plan_run
    from collabgen.config.recipe import Recipe

    recipe = Recipe.model_validate(m.manifest["recipe"])
    return asyncio.run(plan_run(prepare(recipe, check_keys=False))).calls_per_conversation


def reuse_section(on: Measured, off: Measured) -> str:
    """Calls per conversation with and without the reuse of the chosen future, next to 115."""
    upper = reuse_upper

    def stage_calls(m: Measured) -> dict[str, int]:
        return {f"{role} / {stage}": t["calls"] + t["cached_calls"]
                for role, by_stage in m.manifest["usage"]["by_stage"].items() for stage, t in by_stage.items()}

    w = on.workload
    rows = [["CollabLLM reference code (DESIGN section 4)", str(REFERENCE_CALLS), "", "", "",
             f"{REFERENCE_PER_CANDIDATE_TURN} (2 + 12 + 6)"]]
    for label, m in (("collabgen, `reuse_futures: true`", on), ("collabgen, `reuse_futures: false` (default)", off)):
        counts = m.manifest["counts"]
        per_conv = m.metrics["calls_per_conversation"]
        turns = counts["turns"] / counts["conversations_ok"]
        per_candidate_turn = (upper(m) - 1) / (w.max_turns * w.candidates)  # less the opener
        rows.append([label, fmt(per_conv, 1), f"{upper(m):.0f}", f"{turns:.2f}", f"{per_conv / turns:.1f}",
                     f"{per_candidate_turn:.1f}"])
    on_stages, off_stages = stage_calls(on), stage_calls(off)
    conv_on, conv_off = on.manifest["counts"]["conversations_ok"], off.manifest["counts"]["conversations_ok"]
    stages = [[name, f"{on_stages.get(name, 0) / conv_on:.1f}", f"{off_stages.get(name, 0) / conv_off:.1f}"]
              for name in sorted(set(on_stages) | set(off_stages))]
    return "\n".join([
        f"N = {w.seeds}, C = {w.candidates}, S = {w.futures}, window = {w.window}, max_turns = {w.max_turns}, "
        "scripted math roles (the simulated user ends a chat, and a future, once it gets the right answer, so "
        "measured counts sit below the plan's upper bound). The same seeds and request seeds both times. The "
        "reference's own accounting per candidate per turn (2 candidate calls + 12 simulated messages + 6 judge "
        "calls) is set against collabgen's upper bound per candidate per turn.",
        "",
        md_table(["", "calls per conversation (measured)", "upper bound (`collabgen plan`)",
                  "turns per conversation", "calls per turn (measured)",
                  "calls per candidate per turn (upper bound, opener excluded)"], rows),
        "",
        "Calls per conversation by stage:",
        "",
        md_table(["role / stage", "reuse on", "reuse off"], stages),
    ])


class Facts(dict):
    """Measured numbers by name, for the report's sentences; a missing one reads `n/a`."""

    def __missing__(self, key: str) -> str:
        return "n/a"


def gather_facts(results: list[Measured], sweep: list[Measured], floor: dict[str, Any] | None,
                 profiled: tuple[Measured, dict] | None, reuse: tuple[Measured, Measured] | None) -> Facts:
    f = Facts()
    big = max(results, key=lambda m: m.metrics["total_calls"])
    x = big.metrics
    rate = big.setup.slots / big.setup.latency
    f.update(
        L_ms=f"{big.setup.latency * 1000:g}", K=str(big.setup.slots), rate=f"{rate:.0f}",
        big=big.workload.name(big.setup), big_eff=f"{x['efficiency']:.2f}",
        big_eff_calls=f"{x['efficiency_calls']:.2f}", big_occ=fmt(x["occupancy"]),
        big_cpu_ms=f"{x['engine_cpu_ms_per_call']:.2f}",
        big_demand=f"{x['cpu_demand_cores']:.2f}", big_busy=f"{100 * x['engine_cpu_share']:.0f}%",
        big_runqueue=f"{x['engine_runqueue_wait']:.1f}", big_served=f"{x['served_per_second']:.0f}",
        big_max_rate=f"{1000 / x['engine_cpu_ms_per_call']:.0f}",
        big_busy_slots=f"{x['mean_processing']:.1f}", big_send_lag=f"{x['mean_send_lag_ms']:.0f}",
        big_idle_engine=fmt(x["idle_engine_side"], 3), big_idle_server=fmt(x["idle_server_side"], 3),
        big_tail=fmt(x["tail_seconds"]), big_ramp=fmt(x["ramp_seconds"]),
        big_server_cpu=f"{x['server_cpu_ms_per_call']:.2f}",
        big_server_cores=f"{x['server_cpu_ms_per_call'] * x['served_per_second'] / 1000:.2f}",
    )
    parallel = x["calls_per_conversation"] / x["critical_path_calls"]
    f.update(conv_parallel=f"{parallel:.1f}", conv_offered=f"{parallel * big.conversations:.0f}",
             big_conversations=str(big.conversations))
    grid_large = [m for m in results if m.workload.seeds >= 64] or results
    effs = [m.metrics["efficiency"] for m in grid_large]
    f.update(grid_eff_min=f"{min(effs):.2f}", grid_eff_max=f"{max(effs):.2f}")
    small = min(results, key=lambda m: m.metrics["total_calls"])
    s = small.metrics
    f.update(small=small.workload.name(small.setup), small_pre=f"{s['pre_seconds']:.2f}",
             small_post=f"{s['post_seconds']:.2f}", small_bound=f"{s['bound']:.2f}", small_wall=f"{s['wall']:.2f}",
             small_eff_calls=f"{s['efficiency_calls']:.2f}", small_eff=f"{s['efficiency']:.2f}",
             small_crit=str(s["critical_path_calls"]), small_bound_kind=s["bound_kind"], small_demand=f"{s['cpu_demand_cores']:.2f}")
    enough = sorted((m.setup.latency, m.setup.slots) for m in results + sweep if m.metrics["cpu_demand_cores"] < 1)
    if enough:
        f.update(first_ok_L=f"{enough[0][0] * 1000:g}", first_ok_K=str(enough[0][1]))
    by_n = sorted(results, key=lambda m: (m.workload.candidates, m.workload.seeds))
    f["rss_calls"] = ", ".join(f"N={m.workload.seeds} C={m.workload.candidates}: {m.metrics['calls_rss_mib']:.0f}"
                               for m in by_n)
    f["rss_peak"] = ", ".join(f"N={m.workload.seeds} C={m.workload.candidates}: {m.metrics['peak_rss_mib']:.0f}"
                              for m in by_n)
    f["big_prefix_mib"] = f"{x['prefix_meter_mib']:.1f}"
    f["big_prefix_entries"] = str(big.engine["prefix_meter_entries"])
    entries = big.engine["prefix_meter_entries"]
    per_entry = big.engine["prefix_meter_bytes"] / entries if entries else 0.0
    f["prefix_cap_mib"] = f"{500_000 * per_entry / 2**20:.0f}" if entries else "n/a"
    for i, m in enumerate(sweep):
        y = m.metrics
        f[f"sweep{i}_L"] = f"{m.setup.latency * 1000:g}"
        f[f"sweep{i}_demand"] = f"{y['cpu_demand_cores']:.2f}"
        f[f"sweep{i}_eff"] = f"{y['efficiency']:.2f}"
        f[f"sweep{i}_eff_calls"] = f"{y['efficiency_calls']:.2f}"
        f[f"sweep{i}_occ"] = fmt(y["occupancy"])
        f[f"sweep{i}_send_lag"] = f"{y['mean_send_lag_ms']:.0f}"
        f[f"sweep{i}_tail"] = fmt(y["tail_seconds"])
        f[f"sweep{i}_ramp_ms"] = f"{1000 * y['ramp_seconds']:.0f}" if y["ramp_seconds"] is not None else "n/a"
        f[f"sweep{i}_pre"] = f"{y['pre_seconds']:.2f}"
    key = (sweep[0].workload.seeds, sweep[0].workload.candidates) if sweep else None
    same = [m.metrics for m in results if (m.workload.seeds, m.workload.candidates) == key]
    if same:
        f.update(base_eff=f"{same[0]['efficiency']:.2f}", base_send_lag=f"{same[0]['mean_send_lag_ms']:.0f}",
                 base_demand=f"{same[0]['cpu_demand_cores']:.2f}", base_occ=fmt(same[0]["occupancy"]))
    if floor:
        engine_ms = x["engine_cpu_ms_per_call"]
        httpx, post, sdk, role = (floor[k]["cpu_ms_per_call"]
                                  for k in ("httpx2", "openai client.post", "OpenAIBackend", "RoleModel"))
        f.update(import_s=f"{floor['import_seconds']:.2f}", floor_httpx=f"{httpx:.2f}", floor_post=f"{post:.2f}",
                 floor_sdk=f"{sdk:.2f}", floor_role=f"{role:.2f}", floor_post_saving=f"{sdk - post:.2f}",
                 floor_sdk_extra=f"{sdk - httpx:.2f}", floor_exec_extra=f"{role - sdk:.2f}",
                 engine_extra=f"{engine_ms - role:.2f}",
                 post_demand=f"{(engine_ms - (sdk - post)) * rate / 1000:.2f}",
                 httpx_demand=f"{(engine_ms - (sdk - httpx)) * rate / 1000:.2f}")
    if profiled:
        folded = profiled[1]
        total = folded["total"] or 1
        shares = dict(folded["components"])

        def share(*prefixes: str) -> str:
            return f"{100 * sum(v for k, v in shares.items() if k.startswith(prefixes)) / total:.0f}%"

        f.update(prof_tool=folded["tool"], prof_name=profiled[0].workload.name(profiled[0].setup),
                 prof_idle=f"{100 * shares.get(profiling.IDLE, 0) / total:.1f}%",
                 prof_client=share("HTTP client", "openai SDK"), prof_http=share("HTTP client"),
                 prof_sdk=share("openai SDK"), prof_math=share("math-verify"), prof_cache=share("request cache"),
                 prof_exec=share("executor", "retries"), prof_journal=share("journal"),
                 prof_engine=share("engine loop", "prompts", "asyncio"))
        spots = dict(folded.get("spots", []))

        def spot(prefix: str) -> str:
            if not spots:
                return "n/a"
            return f"{100 * sum(v for k, v in spots.items() if k.startswith(prefix)) / total:.1f}%"

        f.update(prof_transform=spot("openai: transforming"), prof_build=spot("openai: building"),
                 prof_models=spot("openai: response"), prof_pool=spot("httpcore2: pool"),
                 prof_prefix=spot("collabgen: prefix"), prof_answers=spot("math-verify"))
    checked, distinct = answer_check_repeats(big.out_dir)
    if checked:
        f.update(math_checked=str(checked), math_distinct=str(distinct),
                 math_repeat=f"{100 * (1 - distinct / checked):.0f}%")
    if reuse:
        on, off = reuse
        for tag, m in (("on", on), ("off", off)):
            counts = m.manifest["counts"]
            turns = counts["turns"] / counts["conversations_ok"]
            f[f"reuse_{tag}"] = fmt(m.metrics["calls_per_conversation"], 1)
            f[f"reuse_{tag}_turn"] = f"{m.metrics['calls_per_conversation'] / turns:.1f}"
            recipe_upper = reuse_upper(m)
            f[f"reuse_{tag}_upper"] = f"{recipe_upper:.0f}"
            f[f"reuse_{tag}_cand_turn"] = f"{(recipe_upper - 1) / (m.workload.max_turns * m.workload.candidates):.1f}"
        f["ref_cand_turn"] = str(REFERENCE_PER_CANDIDATE_TURN)
    return f


def diagnosis(f: Facts) -> str:
    """The measured facts the interpretation rests on, as sentences with the numbers filled in."""
    lines = [
        "- Server capacity at L = {L_ms} ms, K = {K}: K/L = {rate} calls/s. On the largest workload ({big}) the engine "
        "spent {big_cpu_ms} ms of CPU per call (at most {big_max_rate} calls/s on one core), so keeping up would take "
        "{big_demand} cores of a single-threaded asyncio process; it was busy {big_busy} of one core (plus "
        "{big_runqueue} s waiting for a free core), and the server served {big_served} calls/s (mean {big_busy_slots} "
        "of {K} slots busy). Requests reached the server {big_send_lag} ms (mean) after their headers: the body "
        "follows one event-loop turn later.",
        "- Idle slot share in the steady window: {big_idle_engine} with no complete request queued (the engine did "
        "not offer work), {big_idle_server} with one queued (the fake server's own hand-off).",
    ]
    if "floor_httpx" in f:
        lines.append("- Client floor (same request, no engine): bare httpx2 {floor_httpx} ms/call; the openai client "
                     "posting the body without its param transform {floor_post} ms/call; collabgen's OpenAIBackend "
                     "{floor_sdk} ms/call; RoleModel (+ cache, dedup, limiter, "
                     "retries, usage) {floor_role} ms/call; the whole engine {big_cpu_ms} ms/call. Importing the "
                     "openai backend takes {import_s} s in a fresh process.")
    if "sweep0_L" in f:
        sweeps = [f"L = {{sweep{i}_L}} ms: CPU demand {{sweep{i}_demand}} cores, efficiency {{sweep{i}_eff}} "
                  f"(calls phase {{sweep{i}_eff_calls}}), occupancy {{sweep{i}_occ}}, send lag {{sweep{i}_send_lag}} ms"
                  for i in range(10) if f"sweep{i}_L" in f]
        lines.append("- Latency sweep on the same workload: L = {L_ms} ms: CPU demand {base_demand} cores, efficiency "
                     "{base_eff}, occupancy {base_occ}, send lag {base_send_lag} ms; " + "; ".join(sweeps) + ".")
    if "prof_idle" in f:
        lines.append("- Profile ({prof_tool}, {prof_name}): the event loop waited for the network in {prof_idle} of "
                     "its samples; the openai SDK took {prof_sdk} and the HTTP client under it {prof_http}; "
                     "math-verify {prof_math}; request cache {prof_cache}; executor + tenacity {prof_exec}; journal "
                     "{prof_journal}; the engine's own loop, prompts and asyncio scheduling {prof_engine}.")
    if "math_checked" in f:
        lines.append("- math-verify on {big}: {math_checked} futures' answers checked, {math_distinct} distinct "
                     "(seed, answer) pairs among them ({math_repeat} repeats a memo would skip).")
    lines.append("- Fixed costs on {small}: {small_pre} s before the first call (preflight, importing the openai "
                 "client, building three clients) and {small_post} s after the last (shards, manifest, card), "
                 "against a bound of {small_bound} s.")
    lines.append("- Memory (MiB). Highest RSS up to the last call: {rss_calls}. Peak (shard writing): {rss_peak}. "
                 "The prefix-share meters held {big_prefix_entries} blocks ({big_prefix_mib} MiB) after {big}; "
                 "they are capped at 500,000 blocks (about {prefix_cap_mib} MiB at this size per block).")
    return "\n".join(line.format_map(f) for line in lines)


def write_report(path: Path, command: str, setup: Setup, max_turns: int, elapsed: float, results: list[Measured],
                 sweep: list[Measured], floor: dict[str, Any] | None, profiled: tuple[Measured, dict] | None,
                 reuse: tuple[Measured, Measured] | None) -> str:
    facts = gather_facts(results, sweep, floor, profiled, reuse)
    parts = [
        "# collabgen benchmark results",
        "",
        "Produced by one command from the repository root (see bench/README.md):",
        "",
        f"    {command}",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, **nproc = {os.cpu_count()}**, "
        f"load average at the start {os.getloadavg()[0]:.2f} (other processes on the machine share the cores: "
        "see the run-queue wait columns). "
        f"Server: `bench.server` (tests.fakeserver + tests.scripts math roles) in its own process, "
        f"**L = {setup.latency * 1000:g} ms** per call, per-token latency {setup.per_token_latency * 1000:g} ms, "
        f"**K = {setup.slots}** processing slots (further requests wait in its queue). Engine: a fresh "
        f"`bench.engine` process per workload running `run_async`; every role's `concurrency` = K; "
        f"`generation.conversations` = min(N, {setup.conversations_factor}K). "
        f"S = {results[0].workload.futures}, window = {results[0].workload.window}, "
        f"max_turns = {max_turns}; synthetic math seeds. The whole command took {elapsed:.0f} s.",
        "",
        "Definitions. **bound** = max(critical_path_calls x L, total_calls x L / K), critical_path_calls = "
        "1 + T x (w + 2) (opener; per turn: the candidate request, the futures' first user reply, the w-1 "
        "sequential future messages, the judge); total_calls = calls the server served. **efficiency** = bound / "
        "wall, wall = the engine's whole `run_async` (preflight and shard writing included); *calls phase* uses "
        "first call start to last call end. **occupancy (steady)** = time-integral of busy server slots / (K x "
        "steady time), steady = from the first instant all K slots are busy to the last instant they all are "
        "(ramp-up and tail excluded; n/a when that window is shorter than 10 x L); *whole* uses the calls "
        "phase. A slot is busy from the moment a request takes it until its reply is written. **CPU demand** = "
        "engine CPU per call x K / L: cores the engine would need "
        "to issue calls as fast as the server serves them (asyncio runs on one). Calls/pair = served calls / DPO "
        "pairs; tokens/pair = manifest prompt + completion tokens / pairs. Run-queue wait = time the process was "
        "ready but no core was free (/proc schedstat). RSS before = after imports; RSS in calls phase = highest "
        "10 Hz sample up to the last call; peak = VmHWM (reached while writing shards); prefix meter = the "
        "engine's per-role PrefixMeter tables after the run (`sys.getsizeof` of table and keys).",
        "",
        "## Results",
        "",
        results_table(results + sweep),
        "",
        "Cost per pair and resources:",
        "",
        cost_table(results + sweep),
        "",
        "Where the wall time goes (server call log; both processes read the same monotonic clock):",
        "",
        timing_table(results + sweep),
        "",
        "## Measured facts behind the interpretation",
        "",
        diagnosis(facts),
        "",
    ]
    if floor:
        big = max(results, key=lambda m: m.metrics["total_calls"])
        parts += ["## Client floor: CPU per call of the model stack alone", "",
                  f"`bench.client_floor`: {2 * setup.slots} requests in flight against the same server, one "
                  "future-policy prompt.", "", floor_table(floor, big.metrics["engine_cpu_ms_per_call"]), ""]
    if profiled:
        parts += ["## Engine CPU profile", "", profile_section(*profiled), ""]
    if reuse:
        parts += ["## Calls per conversation vs the CollabLLM reference", "", reuse_section(*reuse), ""]
    notes = Path(__file__).parent / "interpretation.md"
    if notes.exists():  # prose with {fact} placeholders, filled with this run's numbers
        parts += [notes.read_text(encoding="utf-8").rstrip().format_map(facts), ""]
    text = "\n".join(parts)
    path.write_text(text + "".join(_kept_section(path, name) for name in KEPT_SECTIONS), encoding="utf-8")
    return text


KEPT_SECTIONS = ("prefix-cache", "mr-accuracy", "view-scale", "reward-throughput")
"""Sections other commands write between `<!-- NAME:begin -->` markers: `bench.prefix_cache`
(a real vLLM server, not this fake one), `bench.mr_accuracy` and `bench.view_scale` (no
server at all)."""


def write_marked_section(path: Path, name: str, body: str) -> None:
    """Put `body` between `<!-- NAME:begin/end -->` in RESULTS.md, replacing the old section
    or appending it; the rest of the file stays as it was."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        old = head.rstrip() + "\n\n" + rest.split(end, 1)[1].lstrip()
    path.write_text(old.rstrip() + "\n\n" + begin + "\n" + body.strip() + "\n" + end + "\n", encoding="utf-8")


def _kept_section(path: Path, name: str) -> str:
    """The marked section `name` of the old RESULTS.md, kept as it was."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin not in old or end not in old:
        return ""
    return "\n" + begin + old.split(begin, 1)[1].split(end, 1)[0] + end + "\n"
