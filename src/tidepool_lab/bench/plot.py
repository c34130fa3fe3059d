"""The benchmark table as a picture: the small-file epoch and the large sequential read, direct
s3fs against Tidepool cold, warm over HTTP and warm on the same host.

Both panels use a log scale (the rows differ by up to three orders of magnitude) and carry their
numbers. Pure drawing from the result dict ``tidepool bench`` writes as JSON; matplotlib is the
optional extra ``tidepool[plot]``, imported lazily (:func:`tidepool_lab.demo.plot.pyplot`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tidepool_lab.demo.plot import pyplot

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 4.5, 100
"""The PNG is 1000 x 450 pixels."""

ROWS = (
    ("direct", "direct s3fs", "#8a96a3"),
    ("cold", "Tidepool cold", "#7fb3e0"),
    ("warm_{}_http", "Tidepool warm, HTTP", "#1479c9"),
    ("warm_{}_local", "Tidepool warm, same host", "#0f2a44"),
)


def _key(pattern: str, kind: str) -> str:
    return pattern.format(kind) if "{}" in pattern else f"{pattern}_{kind}"


def plot_bench(res: dict[str, Any], path: Path) -> Path:
    """Draw ``res`` (the bench's JSON) as a PNG at ``path``; returns ``path``."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    try:
        small = [
            (label, color, res[_key(k, "small")])
            for k, label, color in ROWS
            if _key(k, "small") in res
        ]
        big = [
            (label, color, res[_key(k, "big")]) for k, label, color in ROWS if _key(k, "big") in res
        ]
        if not small and not big:
            raise ValueError("no benchmark row in the result (expected e.g. cold_small)")
        _panel(
            left,
            [(label, color, r["seconds"]) for label, color, r in small],
            f"{res['files']} x {res['file_kib']} KiB epoch: seconds",
            lambda v: f"{v:.3g} s",
            lower_is_better=True,
        )
        _panel(
            right,
            [(label, color, r["mb_per_s"]) for label, color, r in big],
            f"{res['big_mib']} MiB sequential read: MB/s",
            lambda v: f"{v:,.0f} MB/s",
            lower_is_better=False,
        )
        wan = res["wan"]
        fig.suptitle(
            f"tidepool bench, WAN {wan['rtt_ms']:.0f} ms RTT / {wan['rate_mbit']:.0f} Mbit/s "
            "(log scales)",
            fontsize=11,
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _panel(
    ax: Any,
    bars: list[tuple[str, str, float]],
    title: str,
    fmt: Any,
    *,
    lower_is_better: bool,
) -> None:
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    if not bars:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    y = list(range(len(bars)))[::-1]
    values = [max(v, 1e-6) for _, _, v in bars]
    ax.barh(y, values, color=[c for _, c, _ in bars], log=True)
    ax.set_yticks(y, [label for label, _, _ in bars], fontsize=9)
    base = values[0]
    for yi, v in zip(y, values, strict=True):
        gain = base / v if lower_is_better else v / base
        note = fmt(v) + (f"  ({gain:.0f}x)" if gain >= 2 else "")
        ax.text(v * 1.15, yi, note, va="center", fontsize=9)
    ax.set_xlim(min(values) / 3, max(values) * 40)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tidepool_lab.bench.plot RESULT.json OUT.png", file=sys.stderr)
        return 2
    plot_bench(json.loads(Path(args[0]).read_text()), Path(args[1]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
