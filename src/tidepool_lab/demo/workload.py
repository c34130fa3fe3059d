"""The inference-style workload of the demo: read each image, decode, resize, optionally infer.

It takes a ``read(path) -> bytes`` callable so the same loop measures every way of reading (direct
s3fs, Tidepool cold, Tidepool warm) and verifies every byte against the origin's MD5.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass
class EpochResult:
    seconds: float
    read_seconds: float
    files: int
    bytes: int
    latencies: list[float]
    verified: bool
    mismatches: list[str]

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else 0.0
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] if lat else 0.0
        return {
            "seconds": round(self.seconds, 4),
            "read_seconds": round(self.read_seconds, 4),
            "files_per_s": round(self.files / self.seconds, 1) if self.seconds else 0.0,
            "read_p50_ms": round(p50 * 1000, 3),
            "read_p99_ms": round(p99 * 1000, 3),
            "verified": self.verified,
        }


def make_model(name: str) -> Callable[[Image.Image], Any] | None:
    """An inference step: ``None`` for decode+resize only, or a real ResNet-18 forward pass."""
    if name == "none":
        return None
    try:
        import torch
    except ImportError:
        raise SystemExit(
            "--model resnet18 needs PyTorch: .venv/bin/pip install torch==2.13.0 "
            "(CPU build), or run the demo with --model none"
        ) from None
    try:
        from torchvision.models import resnet18

        model = resnet18(weights=None)
    except Exception:  # torchvision missing or broken beside this torch
        from tidepool_lab.demo.resnet import resnet18_plain

        model = resnet18_plain()
    model.eval()
    torch.set_num_threads(1)

    def infer(img: Image.Image) -> Any:
        # straight from the decoded pixels, no numpy needed
        raw = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = raw.reshape(img.height, img.width, 3).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        with torch.no_grad():
            return int(model(x).argmax())

    return infer


def run_epoch(
    paths: list[str],
    read: Callable[[str], bytes],
    expected_md5: dict[str, str],
    infer: Callable[[Image.Image], Any] | None = None,
) -> EpochResult:
    latencies: list[float] = []
    mismatches: list[str] = []
    total = 0
    t0 = time.perf_counter()
    for path in paths:
        r0 = time.perf_counter()
        data = read(path)
        latencies.append(time.perf_counter() - r0)
        total += len(data)
        if hashlib.md5(data).hexdigest() != expected_md5[path]:
            mismatches.append(path)
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224))
        if infer is not None:
            infer(img)
    seconds = time.perf_counter() - t0
    return EpochResult(
        seconds=seconds,
        read_seconds=sum(latencies),
        files=len(paths),
        bytes=total,
        latencies=latencies,
        verified=not mismatches and len(paths) > 0,
        mismatches=mismatches,
    )
