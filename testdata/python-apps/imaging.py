"""Pillow. basic: a PNG round trip; more: WEBP, TIFF and JPEG (plugins imported lazily)."""

import io
import json
import sys
from importlib.metadata import version

from PIL import Image, ImageFilter


def _round_trip(fmt: str) -> dict[str, object]:
    image = Image.new("RGB", (32, 16), (200, 100, 50))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    back = Image.open(io.BytesIO(buffer.getvalue()))
    back.load()
    return {"format": back.format, "size": list(back.size)}


def basic() -> dict[str, object]:
    return {"PNG": _round_trip("PNG")}


def more() -> dict[str, object]:
    found = {fmt: _round_trip(fmt) for fmt in ("WEBP", "TIFF", "JPEG")}
    blurred = Image.new("L", (8, 8), 255).filter(ImageFilter.GaussianBlur(1))
    return {**found, "blur": blurred.getpixel((4, 4)), "version": version("pillow")}


if __name__ == "__main__":
    print(json.dumps({"basic": basic, "more": more}[sys.argv[1]](), sort_keys=True))
