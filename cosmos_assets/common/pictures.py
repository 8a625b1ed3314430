"""Pictures and tables for the Dagster UI: contact sheets, thumbnails and histograms as small inline
images, markdown tables of rows.

The UI has no image metadata type, but its markdown renders ``data:`` image URIs, so every picture
is a small JPEG/PNG embedded in markdown. Keep them small: metadata lives in the instance database.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from cosmos_assets.common.artefacts import ArtefactStore

BACKGROUND = (24, 24, 28)
FOREGROUND = (230, 230, 230)
BAR = (88, 166, 255)
THRESHOLD = (255, 110, 90)


def encode_jpeg(image: Image.Image, quality: int = 80) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def markdown_image(data: bytes, alt: str, mime: str = "image/jpeg") -> str:
    return f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode('ascii')})"


def thumbnail_image(store: ArtefactStore, reference: str | None, size: tuple[int, int] = (160, 90)) -> Image.Image:
    """A stored thumbnail for a contact sheet, or a blank tile when it is missing (a sheet never fails a step)."""
    try:
        return Image.open(store.local_path(reference)).convert("RGB") if reference else Image.new("RGB", size)
    except (OSError, ValueError):
        return Image.new("RGB", size)


def contact_sheet(
    images: Sequence[Image.Image | np.ndarray],
    labels: Sequence[str] | None = None,
    columns: int = 6,
    tile_width: int = 160,
) -> Image.Image:
    """Tile thumbnails in a grid with a caption under each; RGB arrays or PIL images."""
    tiles = [Image.fromarray(im) if isinstance(im, np.ndarray) else im for im in images]
    if not tiles:
        blank = Image.new("RGB", (tile_width, 40), BACKGROUND)
        ImageDraw.Draw(blank).text((6, 12), "no clips", fill=FOREGROUND)
        return blank
    tile_height = max(
        1, round(max(t.height * tile_width / max(1, t.width) for t in tiles))
    )
    caption_height = 14 if labels else 0
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new(
        "RGB", (columns * (tile_width + 4) + 4, rows * (tile_height + caption_height + 4) + 4), BACKGROUND
    )
    draw = ImageDraw.Draw(sheet)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        x = 4 + column * (tile_width + 4)
        y = 4 + row * (tile_height + caption_height + 4)
        scaled = tile.convert("RGB")
        scaled.thumbnail((tile_width, tile_height))
        sheet.paste(scaled, (x + (tile_width - scaled.width) // 2, y))
        if labels:
            draw.text((x + 2, y + tile_height + 1), labels[index][:26], fill=FOREGROUND)
    return sheet


def histogram(
    values: Sequence[float],
    title: str,
    bins: int = 20,
    threshold: float | None = None,
    size: tuple[int, int] = (320, 150),
) -> Image.Image:
    """A bar histogram of ``values`` with an optional threshold line, drawn with PIL."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=FOREGROUND)
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if finite.size == 0:
        draw.text((6, height // 2), "no values", fill=FOREGROUND)
        return image
    low, high = float(finite.min()), float(finite.max())
    if threshold is not None:
        low, high = min(low, threshold), max(high, threshold)
    if high <= low:
        high = low + 1e-9
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    left, right, top, bottom = 6, width - 6, 20, height - 16
    bar_width = (right - left) / bins
    peak = max(1, int(counts.max()))
    for index, count in enumerate(counts):
        x0 = left + index * bar_width
        y0 = bottom - (bottom - top) * count / peak
        draw.rectangle([x0 + 1, y0, x0 + bar_width - 1, bottom], fill=BAR)
    if threshold is not None:
        x = left + (threshold - low) / (high - low) * (right - left)
        draw.line([x, top, x, bottom], fill=THRESHOLD, width=2)
    draw.text((left, bottom + 2), f"{low:.4g}", fill=FOREGROUND)
    label = f"{high:.4g}"
    draw.text((right - 7 * len(label), bottom + 2), label, fill=FOREGROUND)
    return image


def line_plot(values: Sequence[float], title: str, size: tuple[int, int] = (360, 160)) -> Image.Image:
    """A line of ``values`` against their index (a loss curve), with the range in the corner."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    points = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    draw.text((6, 4), f"{title} ({len(points)} points)", fill=FOREGROUND)
    if points.size < 2:
        draw.text((6, height // 2), "not enough points", fill=FOREGROUND)
        return image
    low, high = float(points.min()), float(points.max())
    span = max(high - low, 1e-12)
    left, right, top, bottom = 6, width - 6, 20, height - 16
    xs = left + np.arange(points.size) * (right - left) / (points.size - 1)
    ys = bottom - (points - low) / span * (bottom - top)
    draw.line(list(zip(xs.tolist(), ys.tolist())), fill=BAR, width=2)
    draw.text((6, height - 14), f"min {low:.4g}  max {high:.4g}  last {points[-1]:.4g}", fill=FOREGROUND)
    return image


def markdown_cell(value) -> str:
    """Text cells (file names are user data) go in code spans: shown verbatim, never as markdown,
    links or images. Backticks and line breaks cannot appear inside, and `|` is escaped for the table."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    text = re.sub(r"[\x00-\x1f\x7f`]", "?", str(value)).replace("|", "\\|")
    return f"`{text}`"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows`` (the UI renders it in an asset's metadata), one column per name."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(markdown_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)
