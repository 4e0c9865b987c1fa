"""One report of every benchmark: build/bench/report.md (every table), report.json and the plots.

Reads whatever `build/bench/<name>.json` the benchmarks wrote (scheduling, billing, expertise, console, load)
and writes, beside them, the report with the targets of issue 15 §4 checked against the figures. A benchmark
that did not run is said to be missing, never estimated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCHES = ("scheduling", "billing", "expertise", "contracts", "console", "load")

# Issue 8 asked that moving scheduling and expertise onto the case kit leave these two ratios no worse: their
# values before it (`make bench` on the 2-core machine when issue 8 was filed), beside each run's.
ISSUE_8_BEFORE: dict[str, tuple[tuple[str, ...], float]] = {
    "BookAppointment / its INSERT-through-gRPC ceiling": (("scheduling", "booking_to_ceiling_ratio"), 0.55),
    "téléexpertise intake / Temporal ceiling (workflow + 1 activity)": (
        ("expertise", "ratios", "case intake / Temporal ceiling (target ≥ 0.7)"),
        0.71,
    ),
}

# What the profiles and the per-process costs show for each target, and what would move it (from the runs of
# issue 15 on the 2-core machines; the figures of a run are in its tables).
NOTES: dict[str, str] = {
    "BookAppointment": "the ratio is read on bookings for a patient the caller has just read (as after a "
    "search, and as the bench booked before the case kit): the directory client keeps that caller's own yes "
    "(services/kit/directory.py), so a booking costs its own work, PostgreSQL and the relay's workflow "
    "start (~14 ms of Temporal per start, capped at the relay's rate). The same bookings for a new patient "
    "each (the line beside it) also pay the directory hop, asked on the caller's behalf and audited there: "
    "~1.9 CPU-ms in the directory, ~0.8 in PostgreSQL and ~1 in scheduling per booking (0.35 of the "
    "ceiling). On 2 cores the loop is CPU-bound across processes, so both ratios fall when other work "
    "shares the cores.",
    "QuoteAct p99": "QuoteAct is ~3 ms of CPU and ~4 database round trips (rules, quota counters, audit "
    "record); at 1 in flight its p99 follows the machine's other load, its p50 is the figure to watch.",
    "QuoteAct throughput": "a py-spy profile of billing under the 32-in-flight loop: ~40 % of its busy "
    "samples are gRPC's own per-call work in its C core (what the whole echo ceiling costs), the rest is "
    "ours: the kit's interceptor with its server span (~10 %: authentication, validation ~4 %, span), the "
    "audit record appended (~7 %), the quota counters read (~7 %, one SQL statement with its span), the "
    "rules and the response (~6 %); PostgreSQL shares the cores. Tracing is not what holds it: with "
    "OTEL_TRACES_SAMPLER=always_off, alternated on a quiet machine, quotes went 627 → 769 and 654 → 706 a "
    "second, but the echo rose as much, and the ratio 0.151 → 0.153 and 0.160 → 0.163. By the arithmetic, "
    "0.5 of a ~4,500/s echo is ~2,250 quotes a second, ~0.9 ms of CPU per quote for the client, billing "
    "and PostgreSQL together on 2 cores, where billing alone spends ~1.5 ms on gRPC, the interceptor, a "
    "database read and an audit record: an audited call with a database read stays well below a bare "
    "health check in Python's gRPC. Its latency target (p99 at 1 in flight) is met.",
    "SearchSlots": "each query shape's p50/p99 is in the scheduling table: the tail is no one shape's, it is "
    "the machine's load times the server's cost per call (8 in flight wait on one event loop). A search is "
    "one SQL statement; its freeness check reads a btree range (migration 0010), not the exclusion "
    "constraint's GiST index per slot, which was ~90 % of its database time. Of the scheduling server's "
    "time, ~52 % is gRPC and asyncio's own machinery, ~10 % the span per SQL statement, ~11 % the rest of "
    "the kit's interceptor, ~25 % the handler. What would move it: sampled traces, and a generic plan for "
    "the region + service type search, which PostgreSQL re-plans on every call (~0.3 ms).",
    "whole téléexpertise": "a whole case is ~225–275 ms of CPU: the worker ~85–100 (activity execution "
    "wrapped in tracing interceptors, sandbox activations, the payload codec), Temporal ~70–85, expertise, "
    "directory and PostgreSQL ~15–25 each. The ceiling is two workflow tasks and one activity task; a case "
    "is about nine workflow tasks and five activity tasks: its creation and three Updates (each a workflow "
    "task, its projection written by a local activity inside it), one delivery activity per change that "
    "notifies someone (routed, accepted, reported, each then a workflow task), the billing activity and the "
    "record's publication. The ratio is that count more than our Python: 0.30 in a loaded run, 0.15–0.17 on "
    "a quiet machine, where the ceiling gains more than a case does. What would move it: fewer Temporal "
    "tasks per case (billing and the record's publication in one activity), not faster code.",
    "idle RSS": "measured after make run's demo data, whose contracts get decisions previewed and signed. "
    "The contracts service renders and verifies them in its document process (a child of ~41 MB, ended "
    "after a minute idle), so it no longer keeps ReportLab, Pillow and pyHanko (135 MB after the demo "
    "before, ~125 now); once every service serves and before any request (`python -m tests.bench.rss`) "
    "every service process is at or under ~116 MB. Contracts' growth from serving to after the demo, "
    "itemised (2026-11-29, /proc/PID/smaps before and after, and memray tracking the process from SERVING "
    "to the settled point): 112.8 → 125.1 MB, of which 5.1 MB are code pages of shared libraries its first "
    "requests run for the first time (Temporal's bridge 3.1 for update-with-start and updates, "
    "protovalidate 1.3, cryptography's 0.7: file-backed, shared with every process of the image on a node) "
    "and 7.2 MB its heap. Of what it allocated and still holds (5.8 MB), protovalidate's compiled rules are "
    "3.9 MB (its engine once, ~1.3, then a descriptor pool and rules per proto file: ~2.4 for "
    "contracts.proto), the rest under 0.25 MB each (the payload converter's per-type caches, the SQL "
    "statements' span descriptions, the token verifier's keys). malloc_trim(0) every second gave back "
    "nothing and MALLOC_ARENA_MAX=2 changed nothing: it is live memory, not freed pages the allocator "
    "keeps. The heap's high-water mark of "
    "the first large messages is what the image's allocator settings give back (`ALLOCATOR_ENVIRONMENT`, "
    "services/kit/server.py: scheduling 120.9 → 119.4 MB, contracts 128.8 → 125.2). The rest is what a "
    "service needs to serve: temporalio's client ~15 MB plus ~9 MB for its runtime and connection, grpc "
    "~10, protovalidate ~8, cryptography ~9 (token signatures), pydantic with its settings ~8. What would "
    "move it: fewer of those libraries in a service process (a lighter settings loader than pydantic, a "
    "validator that compiles less than protovalidate's), not less of our own code.",
    "errors at": "the table above says where it stops keeping up. Replayed at 30, 40, 50 and 65× on the same "
    "quiet machine (2026-11-29 15:54 UTC, PARCOURS_BENCH_SPEEDS): it keeps up to 50× with no error (51.3 of "
    "51.9 calls/s; its lags grow: booking → workflow started p99 0.65 s, 1-hour reminders p99 2.9 s behind, "
    "completion → case closed p99 4 s) and not at 65× (48 of 68 calls/s, 2 errors). The teleconsultation "
    "worker and Temporal's dev server saturate together (two thirds of a core each at 50× and at 65×); the "
    "errors are Start/CompleteTeleconsultation Updates waiting past their 20 s bound (UNAVAILABLE, which a "
    "caller sends again with the same request id: counted here as errors). 100× cannot be held on 2 cores: "
    "a complete teleconsultation is ~220–300 ms of CPU (its worker ~90–130, Temporal ~80–115, scheduling "
    "and directory ~17 each), and 100× a region's peak hour brings ~15.5 of them a second beside ~17 "
    "bookings and ~50 slot searches, about twice what the two cores give. It scales with the cores: pinned "
    "to one (`taskset -c 0`, 2026-11-29 18:11 UTC) the same replay keeps up to 20× and not at 30× (19.3 of "
    "32.3 calls/s, the same two processes busiest), and on both cores right after, up to 50× (51.4 of "
    "51.9): at today's cost per case, 100× needs about four cores. Temporal's worker cache (1,000 workflows) "
    "fills during the replay (~1,200 evictions by the 50× phase), but what it evicts are cases waiting for "
    "reminders that fall after the slice: none of them is replayed, and a 10,000-workflow cache changed "
    "nothing. Temporal's workflow sandbox is a quarter of the teleconsultation worker's CPU (a lab run with "
    "the unsandboxed runner, 18:48 UTC: 22–26 ms of worker CPU per case against 29–32 sandboxed, the hub's "
    "~7 % less; 65× then made 62 of 68 calls/s with no error): not enough for 100×, and not worth the "
    "determinism checks the sandbox buys, so it stays. What would move it: Temporal on "
    "its own cluster as in production (ARCHITECTURE §7), and fewer Temporal tasks per case (the "
    "teleconsultation already writes its projection through local activities: 6 workflow tasks and ~4 "
    "activities per complete case, from 10.5 and 9).",
    "achieved": "see the errors above: the same saturation.",
}


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    value: float | None
    met: bool | None
    source: str


def _get(doc: dict[str, Any] | None, *path: str | int) -> Any:
    found: Any = doc
    for key in path:
        in_dict = isinstance(found, dict) and key in found
        in_list = isinstance(found, list) and isinstance(key, int) and -len(found) <= key < len(found)
        if in_dict or in_list:
            found = found[key]
        else:
            return None
    return found


def _measurement(doc: dict[str, Any] | None, starts: str) -> dict[str, Any] | None:
    rows = _get(doc, "measurements")
    items = rows.values() if isinstance(rows, dict) else rows or []
    return next((m for m in items if str(m.get("name", "")).startswith(starts)), None)


def targets(results: dict[str, dict[str, Any]]) -> list[Target]:
    def check(name: str, wanted: str, value: Any, ok: Callable[[float], bool], source: str) -> Target:
        number = float(value) if isinstance(value, int | float) else None
        return Target(name, wanted, number, None if number is None else ok(number), source)

    scheduling, billing = results.get("scheduling"), results.get("billing")
    expertise, load = results.get("expertise"), results.get("load")
    search = _measurement(scheduling, "SearchSlots, 8 in flight")
    quote_one = _get(billing, "measurements", "quote_one")
    idle = _get(load, "idle_rss_mb") or {}
    idle_max = max((v for values in idle.values() for v in values), default=None)
    phases = _get(load, "phases") or []
    top = max(phases, key=lambda p: p["speed"]) if phases else None
    return [
        check(
            "BookAppointment / its INSERT-through-gRPC ceiling (Temporal start included)",
            "≥ 0.6",
            _get(scheduling, "booking_to_ceiling_ratio"),
            lambda v: v >= 0.6,
            "scheduling",
        ),
        check(
            "QuoteAct p99 at 1 in flight (ms)",
            "≤ 10",
            _get(quote_one, "p99_ms"),
            lambda v: v <= 10,
            "billing",
        ),
        check(
            "QuoteAct throughput / gRPC echo ceiling, 32 in flight",
            "≥ 0.5",
            _get(billing, "ratios", "QuoteAct / echo ceiling"),
            lambda v: v >= 0.5,
            "billing",
        ),
        check(
            "whole téléexpertise cases / workflow-with-one-activity ceiling",
            "≥ 0.3",
            _get(expertise, "ratios", "whole cases / Temporal ceiling"),
            lambda v: v >= 0.3,
            "expertise",
        ),
        check(
            "SearchSlots p99 at 8 in flight, 5,000 practitioners (ms)",
            "≤ 25",
            _get(search, "p99_ms"),
            lambda v: v <= 25,
            "scheduling",
        ),
        check("idle RSS of the largest service process (MB)", "≤ 120", idle_max, lambda v: v <= 120, "load"),
        check(
            f"errors at {top['speed'] if top else '100'}× a region's peak",
            "0",
            top["errors"] if top else None,
            lambda v: v == 0,
            "load",
        ),
        check(
            f"achieved / offered calls per second at {top['speed'] if top else '100'}×",
            "≥ 0.95 (keeps up)",
            round(top["achieved_per_second"] / top["offered_per_second"], 3) if top else None,
            lambda v: v >= 0.95,
            "load",
        ),
    ]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _verdict(met: bool | None) -> str:
    return "missing" if met is None else ("met" if met else "**missed**")


def _cpus(host: dict[str, Any]) -> str:
    """`2 CPUs`, or `2 CPUs, 1 of them usable by this run` when it was pinned (taskset)."""
    cpus, usable = host.get("cpus", "?"), host.get("cpus_usable")
    return f"{cpus} CPUs" + (f", {usable} of them usable by this run" if usable not in (None, cpus) else "")


def markdown(results: dict[str, dict[str, Any]], found: list[Target], plots: list[Path]) -> str:
    host = next((r.get("host") for r in results.values() if r.get("host")), {}) or {}
    dates = sorted(r.get("measured_at", "") for r in results.values())
    loads = sorted(
        r["host"]["load_average_1m_at_write"]
        for r in results.values()
        if "load_average_1m_at_write" in r.get("host", {})
    )
    busy = (
        f" Load average of the machine when each benchmark ended: {loads[0]}–{loads[-1]} (other work on "
        "the same cores moves absolute figures)."
        if loads
        else ""
    )
    lines = [
        "# Parcours benchmarks",
        "",
        f"Machine: {_cpus(host)}, {host.get('platform', '?')}, "
        f"Python {host.get('python', '?')}. Measured {dates[0] if dates else '?'} to "
        f"{dates[-1] if dates else '?'} (UTC). Client, hub, PostgreSQL and Temporal share the machine's "
        "cores: ratios to a ceiling measured in the same run are the figures to compare; absolute times are "
        "indications. The embedded PostgreSQL runs with fsync off (a bench and test setting, never a "
        "product one)." + busy,
        "",
        "## Targets (issue 15 §4)",
        "",
        *_table(
            ["target", "wanted", "measured", "verdict", "from"],
            [[t.name, t.wanted, t.value, _verdict(t.met), t.source] for t in found],
        ),
        *[
            f"- {t.name}: {note}\n"
            for t in found
            if t.met is False
            for key, note in NOTES.items()
            if note and t.name.startswith(key)
        ],
    ]
    lines += [
        "## Booking and téléexpertise intake against their ceilings, before the case kit and now (issue 8)",
        "",
        *_table(
            ["ratio", "before (issue 8)", "this run"],
            [
                [name, before, _get(results.get(path[0]), *path[1:]) or "missing"]
                for name, (path, before) in ISSUE_8_BEFORE.items()
            ],
        ),
    ]
    missing = [b for b in BENCHES if b not in results]
    if missing:
        lines += [f"Not run in this report: {', '.join(missing)}.", ""]
    load = results.get("load")
    if load:
        lines += _load_section(load, plots)
    for name in ("scheduling", "billing", "expertise", "contracts", "console"):
        doc = results.get(name)
        if doc:
            lines += [f"## {name}", "", *_measurements(doc)]
    return "\n".join(lines) + "\n"


def _measurements(doc: dict[str, Any]) -> list[str]:
    rows = doc.get("measurements")
    items = list(rows.values()) if isinstance(rows, dict) else list(rows or [])
    lines: list[str] = []
    if items:
        lines += _table(
            ["measurement", "per s", "p50 ms", "p95 ms", "p99 ms", "calls", "errors"],
            [
                [
                    m.get("name"),
                    m.get("per_second"),
                    m.get("p50_ms"),
                    m.get("p95_ms", ""),
                    m.get("p99_ms"),
                    m.get("calls", m.get("count")),
                    m.get("errors"),
                ]
                for m in items
            ],
        )
    for key in (
        "ratios",
        "booking_to_ceiling_ratio",
        "booking_another_patient_to_ceiling_ratio",
        "lag",
        "relay_backlog",
        "cpu_seconds",
        "cpu_ms_per_call",
    ):
        if key in doc:
            lines += [f"- {key}: `{json.dumps(doc[key], ensure_ascii=False)}`"]
    return [*lines, ""]


def keeps_up(phase: dict[str, Any]) -> bool:
    """A speed the hub holds: no error, and at least 95 % of the offered calls made in the phase's time."""
    offered = phase["offered_per_second"]
    return phase["errors"] == 0 and bool(offered) and phase["achieved_per_second"] / offered >= 0.95


def _knee(phases: list[dict[str, Any]]) -> list[str]:
    """Where the hub stops keeping up: the fastest speed it held, and the first it did not hold."""
    ordered = sorted(phases, key=lambda p: p["speed"])
    held = [p for p in ordered if keeps_up(p)]
    missed = [p for p in ordered if not keeps_up(p)]
    if not ordered:
        return []
    if not missed:
        return [f"It keeps up at every speed replayed, up to {ordered[-1]['speed']}×.", ""]
    first = missed[0]
    below = [p for p in held if p["speed"] < first["speed"]]
    kept = f"at every speed replayed up to {below[-1]['speed']}×" if below else "at no speed replayed"
    return [
        f"It keeps up {kept} (no error, ≥ 95 % of the offered calls made) and not at {first['speed']}× "
        f"({first['achieved_per_second']} of {first['offered_per_second']} calls/s, "
        f"{first['errors']} errors; busiest: {_busiest(first)}).",
        "",
    ]


def _load_section(load: dict[str, Any], plots: list[Path]) -> list[str]:
    model = load.get("model", {})
    phases = load.get("phases", [])
    lines = [
        "## A region's day replayed (bench_load)",
        "",
        f"Hub: {load.get('hub')}; database: {load.get('database')}. Model (tests/bench/load.py): "
        f"{model.get('cases_per_weekday')} cases a weekday; peak hour "
        f"{model.get('peak_hour_calls_per_second')} calls/s at 1× — so 100× a region's peak hour is "
        f"{round(100 * (model.get('peak_hour_calls_per_second') or 0), 1)} calls/s. The contracts casework "
        "(a few declarations and ARS contracts a weekday, reviewed by ARS officers) is in the day but falls "
        "outside the morning slice replayed here: its cost is measured alone below. The hub runs from "
        "bytecode, as the image does.",
        "",
        *_table(
            [
                "speed",
                "slice of the day",
                "offered/s",
                "achieved/s",
                "errors",
                "cases",
                "hub CPU-s",
                "CPU-ms per case",
                "CPU-ms per call",
                "DB statements",
                "busiest process (share of a core)",
            ],
            [
                [
                    f"{p['speed']}×",
                    f"{p['slice']['from']}–{p['slice']['to']}",
                    p["offered_per_second"],
                    p["achieved_per_second"],
                    p["errors"],
                    p["cases"],
                    p["hub_cpu_seconds"],
                    p["hub_cpu_ms_per_case"],
                    p["hub_cpu_ms_per_call"],
                    p["db_statements"],
                    _busiest(p),
                ]
                for p in phases
            ],
        ),
    ]
    lines += _knee(phases)
    for failure in load.get("phase_failures", []):
        what = f"at {failure['speed']}×" if "speed" in failure else f"({failure.get('case')})"
        lines += [f"Not measured {what}: {failure['reason']}", ""]
    operations = sorted({op for p in phases for op in p.get("rpc", {})})
    if phases:
        lines += ["### p50 / p95 / p99 per RPC (ms)", ""]
        lines += _table(
            ["RPC", *[f"{p['speed']}×" for p in phases]],
            [[op, *[_cell(p.get("rpc", {}).get(op)) for p in phases]] for op in operations],
        )
        lines += ["### Workflow work behind its trigger (p50 / p95 / p99, ms)", ""]
        lag_names = sorted({k for p in phases for k in p.get("lags", {})})
        lines += _table(
            ["lag", *[f"{p['speed']}×" for p in phases]],
            [[name, *[_cell(p["lags"].get(name)) for p in phases]] for name in lag_names],
        )
        groups = sorted({g for p in phases for g in p.get("cpu_seconds", {})})
        lines += ["### CPU seconds and peak RSS (MB) per process", ""]
        lines += _table(
            ["process", *[f"{p['speed']}× CPU-s" for p in phases], *[f"{p['speed']}× RSS" for p in phases]],
            [
                [
                    g,
                    *[p["cpu_seconds"].get(g) for p in phases],
                    *[p.get("peak_rss_mb", {}).get(g) for p in phases],
                ]
                for g in groups
            ],
        )
    idle = load.get("idle_rss_mb", {})
    if idle:
        lines += ["Idle RSS per service process (MB): " + ", ".join(f"{k} {v}" for k, v in idle.items()), ""]
    helpers = {k: v for k, v in load.get("helper_rss_mb", {}).items() if v}
    if helpers:
        lines += [
            "A service's child for rare work, while it runs (MB): "
            + ", ".join(f"{k} {v}" for k, v in helpers.items()),
            "",
        ]
    per_case = load.get("per_case", {})
    if per_case:
        lines += ["### Cost per case (measured alone, idle use subtracted)", ""]
        lines += _table(
            [
                "case",
                "count",
                "CPU-ms per case",
                "DB round trips per case",
                "where the CPU goes (ms per case)",
            ],
            [
                [
                    c["case"],
                    c["count"],
                    c["cpu_ms_per_case"],
                    c["db_round_trips_per_case"],
                    ", ".join(f"{k} {v}" for k, v in list(c["cpu_ms_per_case_by_process"].items())[:5]),
                ]
                for c in per_case.values()
            ],
        )
    for profile in load.get("profiles", []):
        lines += [f"### Profile: {profile['case']}", ""]
        if "skipped" in profile:
            lines += [f"Skipped: {profile['skipped']}.", ""]
            continue
        for process, summary in profile.get("processes", {}).items():
            if "inclusive" not in summary:
                lines += [f"- {process}: {summary}", ""]
                continue
            lines += [
                f"{process} ({summary['busy_samples']} busy samples of {summary['samples']}; "
                f"`profiles/{profile_file(profile['case'], process)}`): "
                "functions holding the most samples, inclusive — "
                + "; ".join(f"{f} {pct} %" for f, pct in summary["inclusive"][:8]),
                "",
                "self — " + "; ".join(f"{f} {pct} %" for f, pct in summary["self"][:8]),
                "",
            ]
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    return lines


def profile_file(case: str, process: str) -> str:
    return f"{case}-{process}.collapsed.txt"


def _cell(figures: dict[str, Any] | None) -> str:
    if not figures or not figures.get("count"):
        return "–"
    errors = figures.get("errors")
    suffix = f" ({errors} errors)" if errors else ""
    return f"{figures['p50_ms']} / {figures['p95_ms']} / {figures['p99_ms']}{suffix}"


def _busiest(phase: dict[str, Any]) -> str:
    shares = {k: v for k, v in phase.get("cpu_share_of_a_core", {}).items() if k != "bench client"}
    if not shares:
        return "–"
    name = max(shares, key=lambda k: shares[k])
    return f"{name} ({shares[name]:.2f})"


def draw(load: dict[str, Any], out: Path) -> list[Path]:
    """p99 per RPC and CPU per case against the load factor (PNG, matplotlib without a display)."""
    phases = load.get("phases", [])
    if not phases:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speeds = [p["speed"] for p in phases]
    written: list[Path] = []
    # One colour per line or bar (the default cycle has ten, and there are more RPCs and processes).
    colours = plt.get_cmap("tab20").colors
    figure, axis = plt.subplots(figsize=(10, 5))
    for index, op in enumerate(sorted({op for p in phases for op in p.get("rpc", {})})):
        values = [p["rpc"].get(op, {}).get("p99_ms") for p in phases]
        points = [(s, v) for s, v in zip(speeds, values, strict=True) if v]
        if points:
            axis.plot(
                [s for s, _ in points],
                [v for _, v in points],
                marker="o",
                label=op,
                color=colours[index % len(colours)],
            )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("load factor (× a region's peak)")
    axis.set_ylabel("p99 latency (ms)")
    axis.set_title("p99 per RPC against the load factor")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = out / "load-p99.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    written.append(path)

    figure, axis = plt.subplots(figsize=(10, 5))
    groups = sorted({g for p in phases for g in p.get("cpu_seconds", {}) if g != "bench client"})
    bottom = [0.0] * len(phases)
    for index, group in enumerate(groups):
        values = [1000 * p["cpu_seconds"].get(group, 0.0) / max(1, p["cases"]) for p in phases]
        axis.bar(
            [str(s) + "×" for s in speeds],
            values,
            bottom=bottom,
            label=group,
            color=colours[index % len(colours)],
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axis.set_xlabel("load factor (× a region's peak)")
    axis.set_ylabel("hub CPU-ms per case")
    axis.set_title("CPU per case against the load factor, by process")
    # Beside the bars, not over them; the top of the stack first, as the bars read.
    handles, labels = axis.get_legend_handles_labels()
    axis.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = out / "load-cpu-per-case.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    written.append(path)
    return written


def write_report(results_dir: Path) -> list[Path]:
    """Gather build/bench/<name>.json into report.md, report.json and the plots; the paths written."""
    results_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name in BENCHES:
        path = results_dir / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text(encoding="utf-8"))
    plots = draw(results["load"], results_dir) if "load" in results else []
    found = targets(results)
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "targets": [t.__dict__ for t in found],
        "results": results,
        "plots": [p.name for p in plots],
    }
    json_path = results_dir / "report.json"
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path = results_dir / "report.md"
    md_path.write_text(markdown(results, found, plots), encoding="utf-8")
    return [md_path, json_path, *plots]
