"""The 12 Graph200K task families of VisualCloze, their image lists, and the instruction text.

A cell is one image of a row: conditions first, the output last. Cell names are abstract; `column_for` maps them
to Graph200K hub columns (style and FillEdit cells also need the index k chosen per row).
"""

from __future__ import annotations

from dataclasses import dataclass

from omnideft.data.format.writer import image_tag as tag
from omnideft.data.format.writer import image_tags

from .degradations import DEGRADATIONS

DENSE = ("canny", "depth", "hed", "normal", "mlsd", "openpose", "sam2_mask", "uniformer")
CONDITIONS = DENSE + ("mask", "foreground", "background")
STYLES = {"instantstyle": "InstantStyle", "reduxstyle": "ReduxStyle"}
EDITS = {"depthedit": "edit_depth", "filledit": "edit_fill"}
# Cells stored losslessly because their pixels are measured later (contract 1); natural images go to JPEG.
LOSSLESS_CELLS = set(CONDITIONS) - {"foreground", "background"} | {"degraded"}
REVERSE_SUFFIX = "_reverse"  # task suffix when the query's target is a condition cell (VisualCloze's reverse tasks)

PHRASES = {
    "target": "a high-quality image", "reference": "a reference image of the subject",
    "canny": "an edge map (Canny)", "depth": "a depth map", "hed": "a soft edge map (HED)",
    "normal": "a surface normal map", "mlsd": "a straight-line map (M-LSD)", "openpose": "a human pose (OpenPose)",
    "sam2_mask": "a colour-coded segmentation (SAM2)", "uniformer": "a semantic segmentation map",
    "mask": "an object mask", "foreground": "the foreground of the image", "background": "the background of the image",
    "style_ref": "a style reference image", "style_image": "the image rendered in the reference style",
    "edit_depth": "an edited image with a new background", "edit_fill": "an edited image with a new subject",
    "degraded": "a degraded image",
}


@dataclass(frozen=True)
class Variant:
    task: str                      # visualcloze/<family>[/<variant>]
    cells: tuple[str, ...]         # conditions..., output
    style: str | None = None       # InstantStyle / ReduxStyle for style cells
    degradation: str | None = None

    @property
    def family(self) -> str:
        return self.task.split("/")[1]


def _families() -> dict[str, list[Variant]]:
    fam: dict[str, list[Variant]] = {}

    def add(family: str, variant: str | None, cells: tuple[str, ...], **kw) -> None:
        task = f"visualcloze/{family}" + (f"/{variant}" if variant else "")
        fam.setdefault(family, []).append(Variant(task, cells, **kw))

    for c in CONDITIONS:
        add("conditional_generation", c, (c, "target"))
        add("conditional_generation_with_reference", c, ("reference", c, "target"))
    for c in DENSE:
        for s_name, style in STYLES.items():
            add("conditional_generation_with_style", f"{c}_{s_name}", (c, "style_ref", "style_image"), style=style)
        add("style_transfer_with_condition", c, ("reference", c, "style_ref", "style_image"), style="InstantStyle")
        add("dense_prediction", c, ("target", c))
    add("image_generation_with_reference", None, ("reference", "target"))
    add("subject_extraction", None, ("target", "reference"))
    for src in ("target", "reference"):
        for s_name, style in STYLES.items():
            add("style_transfer", f"{src}_{s_name}", (src, "style_ref", "style_image"), style=style)
    for e_name, cell in EDITS.items():
        add("image_editing", e_name, (cell, "target"))
        add("image_editing_with_reference", e_name, ("reference", cell, "target"))
    for d in DEGRADATIONS:
        add("restoration", d, ("degraded", "target"), degradation=d)
        add("restoration_with_reference", d, ("reference", "degraded", "target"), degradation=d)
    return fam


FAMILIES: dict[str, list[Variant]] = _families()
VARIANTS: list[Variant] = [v for vs in FAMILIES.values() for v in vs]


def select_families(spec: str | None) -> dict[str, list[Variant]]:
    """`--tasks` is a comma list of families or family/variant names; None means all 12 families."""
    if not spec:
        return FAMILIES
    chosen: dict[str, list[Variant]] = {}
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        family, _, variant = name.partition("/")
        if family not in FAMILIES:
            raise ValueError(f"--tasks: unknown family {family!r}; known: {', '.join(FAMILIES)}")
        matches = [v for v in FAMILIES[family] if not variant or v.task.endswith("/" + variant)]
        if not matches:
            raise ValueError(f"--tasks: {family} has no variant {variant!r}")
        chosen.setdefault(family, []).extend(m for m in matches if m not in chosen.get(family, []))
    return chosen


def column_for(cell: str, style: str | None, k_style: int, k_fill: int) -> tuple[str, ...]:
    """Hub columns a cell is made from (derived cells need the target and a mask)."""
    if cell == "reference":
        return ("ref",)
    if cell == "mask":
        return ("qwen_2_5_mask",)
    if cell in ("foreground", "background"):
        return ("target", "foreground")
    if cell == "style_ref":
        return (f"{style}_ref_{k_style}",)
    if cell == "style_image":
        return (f"{style}_image_{k_style}",)
    if cell == "edit_depth":
        return ("DepthEdit",)
    if cell == "edit_fill":
        return (f"FillEdit_image_{k_fill}",)
    if cell == "degraded":
        return ("target",)
    return (cell,)


def cell_phrase(cell: str, variant: Variant) -> str:
    if cell == "degraded" and variant.degradation:
        return f"a degraded image ({variant.degradation.replace('_', ' ')})"
    return PHRASES[cell]


def task_text(variant: Variant, cells: tuple[str, ...] | None = None) -> str:
    """The task sentence for `cells` (conditions in the order shown, what is produced last; default the variant's)."""
    cells = cells or variant.cells
    conds = ", ".join(f"{cell_phrase(c, variant)}" for c in cells[:-1])
    output = cell_phrase(cells[-1], variant)
    return f"Each row outlines a logical process, starting from {conds}, to achieve {output}."


def reverse_task(task: str) -> str:
    """The task name of a sample whose query target is not the variant's output: depth -> depth_reverse."""
    return task + REVERSE_SUFFIX


def interleaved_layout(rows: int, cols: int) -> str:
    """Every cell is its own OmniGen placeholder; the query's output is what the model generates."""
    lines, k = [], 1
    examples = rows - 1
    head = (f"{examples} example row{'s' if examples != 1 else ''} and a query, " if examples else "A query, ")
    lines.append(head + f"{cols} images per row; each row goes from its conditions to its result.")
    for r in range(examples):
        lines.append(f"Example {r + 1}: {image_tags(cols - 1, k)} -> {tag(k + cols - 1)}.")
        k += cols
    lines.append(f"Query: {image_tags(cols - 1, k)} -> ?")
    return " ".join(lines)


def grid_layout(rows: int, cols: int, blank: int | None = None) -> str:
    """VisualCloze's layout sentence; the one input is the grid with query cell `blank` (default the last) black."""
    where = ("bottom-right cell" if blank in (None, cols - 1) else
             f"cell in the bottom row, column {blank + 1} of {cols}")
    return (f"A grid layout with {rows} rows and {cols} columns, displaying {rows * cols} images arranged side by "
            f"side: {tag(1)} Fill in the blank {where}.")


def content_caption(meta: dict) -> str | None:
    """The query row's description (item and description_0), or None when the row has none."""
    desc = meta.get("description")
    if not isinstance(desc, dict):
        return None
    return " ".join(str(desc.get(k) or "").strip() for k in ("item", "description_0")).strip() or None


def content_text(meta: dict, last: bool = True) -> str | None:
    """The content sentence; `last` is False when the image to produce is not the last cell of the query row."""
    text = content_caption(meta)
    lead = "The last image in the final row shows" if last else "The missing image in the final row shows"
    return f"{lead}: {text}" if text else None
