"""What the ``tidepool`` command prints: the status table, its live view, a load's progress and
the origin check, kept apart from ``cli.py`` (which parses arguments and calls the library).

* :func:`status_view` — the status table. The default fits 80 columns (DATASET, TOTAL, CACHED,
  CACHED %, HIT RATIO, ORIGIN) and is followed by one note per dataset that has something to
  say (the origin's problem naming bucket and endpoint, a total measured before a restart);
  ``wide`` adds files, capacity, local/remote hit ratios and stale metadata, like
  ``kubectl -o wide``. :func:`watch_status` redraws it in place on a terminal, or prints it
  again every interval when the output is a pipe.
* :func:`follow_load` — a load's progress: a live bar with files, bytes, rate and ETA on a
  terminal; a plain line each time another 10 % is done when the output is a file or a pipe.
* :func:`check_lines` — ``tidepool validate --check``'s report.

Limits: rich renders the tables; colours only on a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tidepool.core.quantity import format_bytes

Output = Literal["table", "wide", "json"]

ORIGIN_WORDS = {
    "reachable": "reachable",
    "unreachable": "DOWN",
    "no-bucket": "NO BUCKET",
    "refused": "REFUSED",
    "tls": "TLS",
    "empty": "EMPTY",
    "error": "ERROR",
}


def _origin_word(status: dict[str, Any]) -> str:
    origin = status.get("origin") or {}
    state = origin.get("state")
    if state is None:  # a worker from before the origin field
        state = "reachable" if status["raw"].get("origin_reachable", True) else "unreachable"
    return ORIGIN_WORDS.get(state, str(state).upper())


def status_table(statuses: Sequence[dict[str, Any]], *, wide: bool = False) -> Table:
    """The datasets' table; the default fits 80 columns."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    columns = ["DATASET", "TOTAL", "CACHED", "CACHED %", "HIT RATIO", "ORIGIN"]
    if wide:
        columns[2:2] = ["FILES"]
        columns += ["CAPACITY", "LOCAL HIT", "REMOTE HIT", "STALE META"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("DATASET", "ORIGIN") else "right")
    for s in statuses:
        c = s["cacheStates"]
        row = [
            s["dataset"],
            s["ufsTotal"],
            c["cached"],
            c["cachedPercentage"],
            c["cacheHitRatio"],
            _origin_word(s),
        ]
        if wide:
            row[2:2] = [s["fileNum"]]
            row += [
                c["cacheCapacity"],
                c.get("localHitRatio", "-"),
                c.get("remoteHitRatio", "-"),
                str(s["raw"].get("stale_metadata_served", 0)),
            ]
        table.add_row(*row)
    return table


def status_notes(statuses: Sequence[dict[str, Any]]) -> list[str]:
    """One line per dataset whose numbers need a word: the origin's problem, an old total."""
    notes = []
    for s in statuses:
        origin = s.get("origin") or {}
        if origin.get("state") not in (None, "reachable") and origin.get("message"):
            notes.append(f"{s['dataset']}: {_origin_word(s).lower()}: {origin['message']}")
        if s.get("ufsTotalAsOf"):
            notes.append(
                f"{s['dataset']}: total as measured at {s['ufsTotalAsOf']} (not listed since)"
            )
        rebalance = rebalance_note(s["dataset"], s.get("raw", {}).get("rebalance") or {})
        if rebalance:
            notes.append(rebalance)
    return notes


def rebalance_note(dataset: str, r: dict[str, Any]) -> str:
    """One line (under 80 columns for a short dataset name) while a rebalance copies files
    from the pool's other members, or when it stopped because the cache is full."""
    state = r.get("state")
    if state not in ("running", "stopped-full"):
        return ""
    done, total = r.get("files_done", 0), r.get("files_total", 0)
    if state == "stopped-full":
        return f"{dataset}: rebalance stopped, cache full at {done}/{total} files"
    copied, errors = format_bytes(r.get("bytes_done", 0)), r.get("errors", 0)
    return f"{dataset}: rebalancing {done}/{total} files ({copied}), {errors} errors"


def status_view(
    statuses: Sequence[dict[str, Any]], endpoint: str, *, wide: bool = False
) -> RenderableType:
    """Table and notes, ready for ``Console.print`` or a live display."""
    parts: list[RenderableType] = [
        Text(f"Tidepool datasets at {endpoint}", style="bold"),
        status_table(statuses, wide=wide),
    ]
    parts += [Text(note, overflow="fold") for note in status_notes(statuses)]
    return Group(*parts)


def pool_table(pool: dict[str, Any]) -> Table:
    """The node pool's members, as ``tidepool status`` shows them after the datasets."""
    t = Table(
        title=f"node pool {pool['nodepool'] or '(unnamed)'}: {pool['replicas']} cop(ies) per file",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    for col in ("MEMBER", "ADDRESS", "STATE", "FILES OWNED", "CACHED"):
        t.add_column(col, justify="left" if col in ("MEMBER", "ADDRESS") else "right")
    for m in pool["members"]:
        cached = m["cached_bytes"]
        t.add_row(
            m["name"],
            m["address"],
            m["state"],
            str(m["files_owned"]),
            format_bytes(cached) if cached is not None else "-",
        )
    return t


def watch_status(
    fetch: Callable[[], RenderableType],
    console: Console,
    interval: float,
    *,
    rounds: int | None = None,
) -> None:
    """Show ``fetch()`` again every ``interval`` seconds until interrupted (or ``rounds`` times):
    redrawn in place on a terminal, printed anew with a time stamp on a pipe."""
    done = 0
    if console.is_terminal:
        from rich.live import Live

        with Live(fetch(), console=console, auto_refresh=False) as live:
            while rounds is None or done < rounds - 1:
                time.sleep(interval)
                live.update(fetch(), refresh=True)
                done += 1
        return
    while rounds is None or done < rounds:
        if done:
            time.sleep(interval)
        console.print(Text(time.strftime("--- %Y-%m-%d %H:%M:%S")))
        console.print(fetch())
        console.file.flush()
        done += 1


# ---- load progress ---------------------------------------------------------------------------

FINAL_PHASES = ("Complete", "Incomplete", "Failed")


def _eta(job: dict[str, Any]) -> str:
    rate, total, done = job.get("rate_bytes_s") or 0.0, job["bytes_total"], job["bytes_done"]
    if not total or rate <= 0 or done >= total:
        return "-"
    seconds = int((total - done) / rate)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(dataset: str, job: dict[str, Any]) -> str:
    """A plain, self-contained progress line (for logs and pipes)."""
    total = job["bytes_total"]
    pct = 100.0 * job["bytes_done"] / total if total else 0.0
    files = f"{job['files_done']}/{job['files_total'] or '?'} files"
    size = f"{format_bytes(job['bytes_done'])} of {format_bytes(total)}"
    rate = f"{(job.get('rate_bytes_s') or 0.0) / 1e6:.1f} MB/s"
    return f"load {dataset}: {pct:.0f}% {files}, {size}, {rate}, ETA {_eta(job)}"


def decile(job: dict[str, Any]) -> int:
    """How many tenths of the bytes are done (0-10); 0 while the total is unknown."""
    total = job["bytes_total"]
    if not total:
        return 0
    return min(10, int(10 * job["bytes_done"] // total))


def follow_load(
    poll: Callable[[], dict[str, Any]],
    dataset: str,
    console: Console,
    *,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    interval: float = 0.2,
) -> dict[str, Any]:
    """Follow a load until it ends; returns its last progress record."""
    if console.is_terminal:
        return _follow_bar(poll, dataset, console, on_update, interval)
    shown = -1
    while True:
        job = poll()
        if on_update is not None:
            on_update(job)
        final = job["phase"] in FINAL_PHASES
        step = decile(job)
        if job["files_total"] and (step > shown or (final and shown < 0)):
            console.print(progress_line(dataset, job), highlight=False, soft_wrap=True)
            console.file.flush()
            shown = step
        if final:
            return job
        time.sleep(interval)


def _follow_bar(
    poll: Callable[[], dict[str, Any]],
    dataset: str,
    console: Console,
    on_update: Callable[[dict[str, Any]], None] | None,
    interval: float,
) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn(f"[bold]{dataset}[/]"),
        BarColumn(),
        TextColumn("{task.fields[files]} files"),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("load", total=None, files="0/?")
        while True:
            job = poll()
            if on_update is not None:
                on_update(job)
            progress.update(
                task,
                completed=job["bytes_done"],
                total=job["bytes_total"] or None,
                files=f"{job['files_done']}/{job['files_total'] or '?'}",
            )
            if job["phase"] in FINAL_PHASES:
                return job
            time.sleep(interval)


def load_summary(job: dict[str, Any], out: TextIO, err: TextIO) -> None:
    """The last lines of ``tidepool load``: phase, counts, and why it is not Complete."""
    rate = (job.get("rate_bytes_s") or 0.0) / 1e6
    print(
        f"{job['phase']}: {job['files_done']}/{job['files_total']} files, "
        f"{job['bytes_done'] / 2**20:.1f} MiB in {job['elapsed_s']:.1f} s ({rate:.1f} MB/s)",
        file=out,
    )
    if job.get("message"):
        print(f"  {job['message']}", file=err if job["phase"] != "Complete" else out)
    for e in job.get("errors", []):
        print(f"  error: {e}", file=err)


# ---- the origin check --------------------------------------------------------------------------


def check_lines(results: Sequence[Any]) -> list[str]:
    """``tidepool validate --check``: a line per mount (``ProbeResult.line()``), then a verdict."""
    lines = ["origin check:"] + [f"  {r.line()}" for r in results]
    bad = [r for r in results if not r.ok]
    if not results:
        lines.append("  (no mounts to check)")
    elif bad:
        lines.append(f"{len(bad)} of {len(results)} mount(s) cannot be used as they are")
    else:
        lines.append(f"all {len(results)} mount(s) answer")
    return lines


__all__ = [
    "ORIGIN_WORDS",
    "Output",
    "check_lines",
    "decile",
    "follow_load",
    "load_summary",
    "pool_table",
    "progress_line",
    "rebalance_note",
    "status_notes",
    "status_table",
    "status_view",
    "watch_status",
]
