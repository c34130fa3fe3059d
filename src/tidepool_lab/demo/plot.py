"""The talk's chart from a demo result: time per scenario, before (straight from S3) and after
(through Tidepool, cold and warm), each bar split into waiting for bytes and the program's own work
(decode + resize, and ResNet-18 inference when ``--model`` was used).

Pure drawing: it takes the result dict ``tidepool demo`` writes as JSON and writes a PNG, so it is
tested on fixed dicts and can redraw an old result (``python -m tidepool_lab.demo.plot in.json
out.png``). matplotlib is an optional extra (``tidepool[plot]``), imported only here, with the Agg
backend (no display needed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 100
"""The PNG is WIDTH_IN x HEIGHT_IN inches at DPI dots per inch (800 x 450 pixels)."""

READ_COLOR, WORK_COLOR = "#1479c9", "#b8c7d6"
LABELS = {
    "direct": "before: straight from S3",
    "cold": "Tidepool, cold cache",
    "warm": "Tidepool, warm cache",
}


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or a clear exit with the install hint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib: .venv/bin/pip install 'tidepool[plot]' "
            "(make demo installs it)"
        ) from None
    return plt


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def plot_demo(report: dict[str, Any], path: Path) -> Path:
    """Draw ``report`` (the demo's JSON) as a PNG at ``path``; returns ``path``."""
    plt = pyplot()
    scenarios = [s for s in ("direct", "cold", "warm") if s in report["scenarios"]]
    if not scenarios:
        raise ValueError(f"no scenario in the demo result; expected some of {list(LABELS)}")
    rows = [report["scenarios"][s] for s in scenarios]
    read = [r["read_seconds"] for r in rows]
    work = [max(0.0, r["seconds"] - r["read_seconds"]) for r in rows]
    model = report.get("model", "none")
    work_label = "decode + resize" if model in ("none", None) else f"decode + {model} inference"

    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    try:
        y = list(range(len(scenarios)))[::-1]
        ax.barh(y, read, color=READ_COLOR, label="reading the images")
        ax.barh(y, work, left=read, color=WORK_COLOR, label=work_label)
        ax.set_yticks(y, [LABELS[s] for s in scenarios])
        ax.set_xlabel("seconds for one pass over the dataset")
        total = max(r + w for r, w in zip(read, work, strict=True))
        direct_read = read[0] if scenarios[0] == "direct" else None
        for name, yi, r, w in zip(scenarios, y, read, work, strict=True):
            note = f"{_seconds(r + w)}, reads {_seconds(r)}"
            if direct_read and name != "direct" and r > 0 and direct_read / r >= 2:
                note += f": {direct_read / r:.0f}x faster"
            ax.text(r + w + total * 0.01, yi, note, va="center", fontsize=9)
        ax.set_xlim(0, total * 1.45)
        wan = report.get("wan", {})
        ax.set_title(
            f"{report['files']} images, {report['bytes'] / 2**20:.1f} MiB, WAN "
            f"{wan.get('rtt_ms', 0):.0f} ms RTT / {wan.get('rate_mbit', 0):.0f} Mbit/s",
            fontsize=11,
        )
        ax.legend(loc="lower right", fontsize=9, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tidepool_lab.demo.plot RESULT.json OUT.png", file=sys.stderr)
        return 2
    plot_demo(json.loads(Path(args[0]).read_text()), Path(args[1]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
