"""A contact sheet: example pairs, query inputs and the output side by side, labelled."""

from __future__ import annotations

from PIL import Image, ImageDraw

LABEL_H = 14


def stack_rows(images: list[Image.Image]) -> Image.Image:
    """Images one below the other, left-aligned, on white."""
    sheet = Image.new("RGB", (max(im.width for im in images), sum(im.height for im in images)), "white")
    y = 0
    for im in images:
        sheet.paste(im, (0, y))
        y += im.height
    return sheet


def contact_sheet(examples: list[tuple[Image.Image, Image.Image]], query: list[Image.Image], output: Image.Image,
                  cell: int = 128, output_label: str = "output",
                  more: list[tuple[str, Image.Image]] = ()) -> Image.Image:
    """One labelled row: example pairs, query images, the output, then `more` (label, image) cells."""
    cells: list[tuple[str, Image.Image]] = []
    for i, (a, b) in enumerate(examples):
        cells += [(f"example {i + 1} in", a), (f"example {i + 1} out", b)]
    cells += [(f"query {i + 1}", im) for i, im in enumerate(query)]
    cells.append((output_label, output))
    cells += list(more)
    sheet = Image.new("RGB", (cell * len(cells), cell + LABEL_H), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, im) in enumerate(cells):
        thumb = im.convert("RGB").copy()
        thumb.thumbnail((cell, cell))
        sheet.paste(thumb, (i * cell + (cell - thumb.width) // 2, LABEL_H + (cell - thumb.height) // 2))
        draw.text((i * cell + 3, 1), label, fill="black")
    return sheet
