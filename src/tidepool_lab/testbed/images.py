"""A deterministic sample dataset of real JPEG files for the demo, benchmarks and tests.

An edge inference or training job reads many small image files; this module makes such a dataset
without downloading anything: ``make_jpegs(600)`` yields ``train/class_NN/img_NNNNN.jpg`` names and
Pillow-encoded JPEG bytes of about ``target_kib`` each. The pictures look natural-ish to a JPEG
encoder (a smooth colour field, blurred shapes, fine luminance noise), so their size and decode cost
are close to a photo's, which is what the cache and the benchmarks care about.

Limits: images are deterministic for a given ``seed`` with a given Pillow/libjpeg build (the JPEG
encoder is deterministic, the pixels come from :class:`random.Random`), not across Pillow versions.
Sizes land within about ±15 % of ``target_kib`` for targets from ~10 KiB to a few MiB; the content
is not meant to be classified.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CLASS_COUNT", "make_jpeg", "make_jpegs", "write_tree"]

log = logging.getLogger(__name__)

CLASS_COUNT = 10
"""Number of ``class_NN`` directories the images are spread over."""

# Measured JPEG density of these pictures at quality 90 with the noise below: ~0.46 bytes/pixel.
_BYTES_PER_PIXEL = 0.46
_QUALITY = 90
_NOISE = 0.2
_ASPECTS = (4 / 3, 3 / 2, 1.0, 3 / 4, 16 / 9)
_SCALE = 4  # shapes are drawn and blurred at 1/_SCALE resolution, then upscaled (fast and smooth)


def _dimensions(rng: random.Random, target_kib: int) -> tuple[int, int]:
    area = max(64 * 64, target_kib * 1024 / _BYTES_PER_PIXEL)
    aspect = rng.choice(_ASPECTS)
    width = math.sqrt(area * aspect)
    height = area / width
    return max(64, round(width / 16) * 16), max(64, round(height / 16) * 16)


def _picture(rng: random.Random, width: int, height: int) -> Image.Image:
    sw, sh = max(8, width // _SCALE), max(8, height // _SCALE)
    field = Image.frombytes("RGB", (4, 3), rng.randbytes(4 * 3 * 3))
    small = field.resize((sw, sh), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(small)
    for _ in range(rng.randint(6, 14)):
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            x0, y0 = rng.randrange(sw), rng.randrange(sh)
            box = (
                x0,
                y0,
                x0 + rng.randint(4, max(5, sw // 2)),
                y0 + rng.randint(4, max(5, sh // 2)),
            )
            draw.ellipse(box, fill=colour)
        else:
            points = [(rng.randrange(sw), rng.randrange(sh)) for _ in range(rng.randint(3, 5))]
            draw.polygon(points, fill=colour)
    small = small.filter(ImageFilter.GaussianBlur(0.8))
    picture = small.resize((width, height), Image.Resampling.BILINEAR)
    noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
    return Image.blend(picture, noise, _NOISE)


def _encode(picture: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_jpeg(seed: int, target_kib: int = 100) -> bytes:
    """One JPEG of about ``target_kib`` KiB, a pure function of ``seed`` and ``target_kib``."""
    if target_kib <= 0:
        raise ValueError(f"target_kib must be a positive number of KiB, got {target_kib!r}")
    rng = random.Random(seed)
    picture = _picture(rng, *_dimensions(rng, target_kib))
    data = _encode(picture, _QUALITY)
    ratio = len(data) / (target_kib * 1024)
    if not 0.85 <= ratio <= 1.15:
        # One correction step: quality moves size roughly linearly in this range.
        quality = int(min(97, max(40, _QUALITY - (ratio - 1) * 40)))
        data = _encode(picture, quality)
    return data


def make_jpegs(count: int, seed: int = 0, target_kib: int = 100) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, jpeg_bytes)`` for ``count`` images, deterministic for ``seed``.

    Names are ``train/class_NN/img_NNNNN.jpg`` spread round-robin over :data:`CLASS_COUNT`
    class directories, so listings of every class are non-trivial.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count!r}")
    for index in range(count):
        name = f"train/class_{index % CLASS_COUNT:02d}/img_{index:05d}.jpg"
        yield name, make_jpeg(seed * 1_000_003 + index, target_kib)


def write_tree(dest: Path, items: Iterable[tuple[str, bytes]]) -> int:
    """Write ``(relative_name, data)`` items under ``dest``; return the number of bytes written.

    Names must be relative and stay inside ``dest`` (no ``..``), as object keys would.
    """
    root = dest.resolve()
    total = 0
    for name, data in items:
        target = (root / name).resolve()
        if not target.is_relative_to(root) or target == root:
            raise ValueError(f"item name {name!r} escapes the destination {str(root)!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        total += len(data)
    log.debug("wrote %d bytes under %s", total, root)
    return total
