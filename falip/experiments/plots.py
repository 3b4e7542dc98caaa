"""Figures people would rather look at than read: sweep curves, head-sensitivity heatmaps, attention maps.

matplotlib (Agg backend: files only, no display) draws them; every figure is written next to the CSV
it plots, so the numbers behind a picture are always one file away.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_write



def save_figure(figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG through an exclusive temporary file (never through a planted link),
    cropped to what is drawn (no title, label or outside legend cut off)."""
    return atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight"))

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sort_key(value) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def grid_plot(table: pd.DataFrame, points: Mapping[str, Mapping[str, float]], x: str, lines: str | None,
              path: str | Path, title: str = "") -> Path:
    """Accuracy vs ``x`` (one line per value of ``lines``), one panel per table column. ``points``: prompt
    name -> its grid values (e.g. ``{"alpha": 0.2, "sigma": 100}``); prompts without ``x`` are left out."""
    plt = _pyplot()
    columns = list(table.columns)
    figure, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for axis, column in zip(axes[0], columns):
        groups: dict = {}
        for prompt, values in points.items():
            if x in values and prompt in table.index:
                groups.setdefault(values.get(lines) if lines else None, []).append((values[x], table.loc[prompt, column]))
        for key, pairs in sorted(groups.items(), key=lambda item: _sort_key(item[0])):
            pairs.sort()
            axis.plot([p[0] for p in pairs], [p[1] for p in pairs], marker="o", label=f"{lines}={key}" if lines else None)
        for prompt in table.index:  # prompts outside the grid (e.g. Original CLIP) as reference lines
            if prompt not in points:
                axis.axhline(table.loc[prompt, column], linestyle="--", color="gray", linewidth=1)
                axis.annotate(prompt, (0.01, table.loc[prompt, column]), xycoords=("axes fraction", "data"),
                              fontsize=7, color="gray", va="bottom")
        xs = sorted({p[0] for pairs in groups.values() for p in pairs})
        if xs and xs[0] > 0 and len(xs) > 2:
            axis.set_xscale("log")
            axis.minorticks_off()
            axis.set_xticks(xs, [f"{v:g}" for v in xs])
        axis.set_xlabel(x)
        axis.set_ylabel("accuracy (%)")
        axis.set_title(str(column))
        if lines:
            axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the data
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    save_figure(figure, path)
    plt.close(figure)
    return path


def heatmap(matrix: np.ndarray, path: str | Path, title: str, row_labels: Sequence[str], column_labels: Sequence[str],
            value_label: str = "", scale: tuple[float, float] | None = None) -> Path:
    """A layer x head (or any) matrix as an annotated heatmap; ``scale`` = (vmin, vmax) shared with the
    heatmaps it is compared with (default: its own range)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(0.5 * len(column_labels) + 2.5, 0.4 * len(row_labels) + 1.6))
    vmin, vmax = scale if scale is not None else (None, None)
    image = axis.imshow(matrix, cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax)
    axis.set_xticks(range(len(column_labels)), column_labels, fontsize=7)
    axis.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    axis.set_xlabel("head")
    axis.set_ylabel("layer")
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis, label=value_label)
    figure.tight_layout()
    path = Path(path)
    save_figure(figure, path)
    plt.close(figure)
    return path


def heatmaps_side_by_side(matrices: Mapping[str, np.ndarray], path: str | Path, title: str, value_label: str,
                          row_label: str = "layer", column_label: str = "head") -> tuple[Path, tuple[float, float]]:
    """Several matrices of one kind (a prompt each) in one figure on **one** colour scale, one colour bar;
    returns the path and the (vmin, vmax) every panel uses."""
    plt = _pyplot()
    scale = (min(float(m.min()) for m in matrices.values()), max(float(m.max()) for m in matrices.values()))
    first = next(iter(matrices.values()))
    width = 0.45 * first.shape[1] + 1.2
    figure, axes = plt.subplots(1, len(matrices), figsize=(width * len(matrices) + 1.2, 0.4 * first.shape[0] + 1.8),
                                squeeze=False, constrained_layout=True)
    for axis, (name, matrix) in zip(axes[0], matrices.items()):
        image = axis.imshow(matrix, cmap="viridis", aspect="auto", vmin=scale[0], vmax=scale[1])
        axis.set_xticks(range(matrix.shape[1]), [str(i) for i in range(matrix.shape[1])], fontsize=7)
        axis.set_yticks(range(matrix.shape[0]), [str(i) for i in range(matrix.shape[0])], fontsize=7)
        axis.set_xlabel(column_label)
        axis.set_title(name, fontsize=9)
    axes[0][0].set_ylabel(row_label)
    figure.colorbar(image, ax=list(axes[0]), label=value_label, shrink=0.9)
    figure.suptitle(title, fontsize=10)
    path = Path(path)
    save_figure(figure, path)
    plt.close(figure)
    return path, scale


def collect_plot(frame: pd.DataFrame, x: str, path: str | Path) -> Path:
    """A sweep's long-form results: value vs ``x``, one line per prompt, one panel per column."""
    plt = _pyplot()
    columns = list(dict.fromkeys(frame["column"]))
    figure, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for axis, column in zip(axes[0], columns):
        part = frame[frame["column"] == column]
        for prompt, rows in part.groupby("prompt", sort=False):
            rows = rows.sort_values(x)
            axis.plot(rows[x], rows["value"], marker="o", label=prompt)
        axis.set_xlabel(x)
        axis.set_title(str(column))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("value (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the data
    figure.tight_layout()
    path = Path(path)
    save_figure(figure, path)
    plt.close(figure)
    return path


def depth_views_figure(pixels, regions: Sequence, patch_size: int, path: str | Path, title: str = "") -> Path:
    """The V depth maps of one shape (``(V, 3, S, S)`` model inputs) side by side, each with its region
    of attention: the foreground's bounding box (red) and the patch tokens the foreground covers (white
    cells); an empty view says so."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    count = len(regions)
    figure, axes = plt.subplots(1, count, figsize=(2.3 * count + 0.8, 2.9), squeeze=False, constrained_layout=True)
    planes = [np.asarray(pixels[view][0].detach().float().cpu()) for view in range(count)]
    top = max(float(plane.max()) for plane in planes) or 1.0
    for view, (axis, region) in enumerate(zip(axes[0], regions)):
        plane = planes[view]
        shown = axis.imshow(plane, cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        if region is None:
            axis.set_title(f"view {view}: empty", fontsize=9)
            continue
        x0, y0, x1, y1 = region.boxes[0]
        axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1.5))
        covered = 0
        if region.mask is not None:
            size = plane.shape[0]
            for row in range(size // patch_size):
                for col in range(size // patch_size):
                    cell = region.mask[row * patch_size:(row + 1) * patch_size, col * patch_size:(col + 1) * patch_size]
                    if cell.any():
                        covered += 1
                        axis.add_patch(Rectangle((col * patch_size - 0.5, row * patch_size - 0.5), patch_size, patch_size,
                                                 fill=False, edgecolor="white", linewidth=0.4, alpha=0.6))
        axis.set_title(f"view {view}: {covered} tokens", fontsize=9)
    figure.colorbar(shown, ax=list(axes[0]), label="depth value (one scale)", shrink=0.85)
    figure.supxlabel(f"red: the view's ROA box; white cells: the {patch_size}-px patch tokens the foreground covers",
                     fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)
    plt.close(figure)
    return path
