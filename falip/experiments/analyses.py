"""Analyses that look inside the model instead of scoring it: head sensitivity, attention maps, depth views.

The computations, and below them each analysis as a ``falip-run`` experiment (:data:`ANALYSES`: the
config, the run settings, the loaded model, the prompts -> figures and CSVs), so the runner keeps only
the scoring loop and its dispatch.

* :func:`head_sensitivity` -- over a split's regions, the mean ``||G'_h - G_h||`` per layer x head,
  ``G'`` a head's contribution to the [CLS] update under a prompt (edited pixels and/or bias), ``G``
  the same head on the unedited image without a bias (paper section "Unleash": the last layers
  change most). CSV + one heatmap PNG per prompt.
* :func:`attention_maps` -- for an image and its ROA, [CLS]'s attention over the patches (a layer, or
  the rollout) under each prompt, side by side, plus the share of it inside the ROA. PNG + CSV.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.images import read_rgb
from ..data.regions import load_regions
from ..data.registry import check_dataset, load_dataset_split
from ..encoding.regions import PreparedItems, prepare_regions, steering_for
from ..errors import ConfigError, DatasetError
from ..geometry import Region
from ..io import atomic_write, atomic_write_bytes, atomic_write_text, write_json
from ..model.attention_maps import cls_attention_map
from ..model.clip import FoveatedCLIP
from ..model.heads import head_contributions
from ..prompts.prompt import VisualPrompt, roa_token_mask
from ..tasks import TASKS
from ..tasks.base import Task
from .generated import materialize
from .plots import _pyplot, depth_views_figure, heatmap, heatmaps_side_by_side, save_figure
from .provenance import environment, git_state, utc_now
from .record import config_hash, create_run_folder
from .settings import RunSettings


def _steered_rows(model: FoveatedCLIP, prompt: VisualPrompt, inputs, rows: int | None = None):
    """One prepared item's pixels under ``prompt`` (one row per region, or the first ``rows``) and the prompt's
    whole :class:`Steering` for them (bias, intervention, reference stream), built as the scoring loop builds it
    (``steering_for``)."""
    pixels = inputs.pixels.expand(inputs.rows, -1, -1, -1) if inputs.pixels.shape[0] == 1 else inputs.pixels
    count = inputs.rows if rows is None else rows
    reference = inputs.reference_pixels
    steering = steering_for(model, prompt, (inputs.input_regions or [None] * inputs.rows)[:count],
                            reference, [0] * count if reference is not None else None)
    return pixels[:count], steering


def _prompted(model: FoveatedCLIP, image: Image.Image, regions: Sequence, prompt: VisualPrompt, resize: str,
              rows: int | None = None):
    """:func:`_steered_rows` of ``image`` and its ``regions``."""
    return _steered_rows(model, prompt, prepare_regions(model.preprocessor, image, regions, prompt, resize), rows)


def head_sensitivity(model: FoveatedCLIP, task: Task, splits: Mapping[str, Any], prompts: Sequence[VisualPrompt],
                     output_dir: Path, name: str, max_items: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Mean ``||G'_h - G_h||`` per (prompt, layer, head) over every region of the splits' items.

    Items are prepared as the scoring loop prepares them (:class:`~falip.encoding.regions.PreparedItems`:
    images and their regions, or point clouds rendered to views), each prompt steers as it does there
    (:func:`~falip.encoding.regions.steering_for`), and ``G`` is the same rows without any prompt."""
    plain_prompt = VisualPrompt("__plain__")
    sums = {prompt.name: torch.zeros(model.num_layers, model.num_heads) for prompt in prompts}
    count = 0
    for split in splits.values():
        items, regions = task.items(split), task.regions(split)
        limit = len(items) if max_items is None else min(max_items, len(items))
        prepared = PreparedItems(items, regions, [plain_prompt, *prompts], model.preprocessor, task.resize,
                                 render_device=model.device)
        for index in tqdm(range(limit), desc=f"{name} {getattr(split, 'split', '')}", disable=not progress, leave=False):
            _, inputs, _ = prepared[index]
            if isinstance(inputs, str):
                raise DatasetError(f"{inputs} (head sensitivity needs every item it reads)")
            plain = head_contributions(model, inputs[plain_prompt.name].pixels)  # (1 or V, L, H, W)
            for prompt in prompts:
                pixels, steering = _steered_rows(model, prompt, inputs[prompt.name])
                prompted = head_contributions(model, pixels, steering=steering)
                sums[prompt.name] += (prompted - plain).norm(dim=-1).sum(0)
            count += inputs[plain_prompt.name].num_regions
    rows = [{"prompt": prompt, "layer": layer, "head": head, "mean_change": float(total[layer, head] / count)}
            for prompt, total in sums.items() for layer in range(total.shape[0]) for head in range(total.shape[1])]
    frame = pd.DataFrame(rows)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / f"{name}.csv", frame.to_csv(index=False, float_format="%.6f"))
    means = {prompt: (total / count).numpy() for prompt, total in sums.items()}
    side_by_side, scale = heatmaps_side_by_side(
        means, output_dir / f"{name}.png", f"mean ||G'_h - G_h|| of the [CLS] update per layer and head "
        f"({count} regions; one colour scale)", "change")
    figures = [str(side_by_side)]
    for prompt, mean in means.items():  # each prompt alone too, on the same scale
        safe = "".join(ch if ch.isalnum() else "_" for ch in prompt)
        figures.append(str(heatmap(mean, output_dir / f"{name}_{safe}.png",
                                   f"{prompt}: mean ||G'_h - G_h|| of the [CLS] update ({count} regions)",
                                   [str(layer) for layer in range(mean.shape[0])],
                                   [str(head) for head in range(mean.shape[1])], "change", scale=scale)))
    by_layer = frame.groupby(["prompt", "layer"], sort=False)["mean_change"].mean().unstack("layer")
    print(f"\n{name}: mean change per layer (over heads), {count} regions\n{by_layer.round(4).to_string()}")
    write_json(output_dir / f"{name}.json", {"experiment": name, "status": "complete", "updated": utc_now(),
                                             "regions": count, "figures": figures, "colour_scale": list(scale),
                                             "model": model.source,
                                             "code": {**git_state(), "falip": environment()["falip"]}})
    print(f"\nwrote {output_dir / f'{name}.csv'}, {output_dir / f'{name}.json'} and the heatmaps "
          + ", ".join(figures))
    return frame


def attention_maps(model: FoveatedCLIP, image: Image.Image, regions: Sequence, prompts: Sequence[VisualPrompt],
                   path: Path, layer: int | str = -1, resize: str = "squash") -> pd.DataFrame:
    """One figure: the image with its ROA, then [CLS]'s patch attention under each prompt; returns the
    share of attention inside the ROA per prompt (also written as ``<path>.csv``). The maps themselves go to
    ``<path>.npz``: one ``(grid, grid)`` float32 array per prompt (named by the prompt; head-mean, ``layer``),
    and ``roa`` (the ROA's patch tokens, bool)."""
    region = Region.of(regions[0]) if len(regions) == 1 else Region(tuple(b for r in regions for b in Region.of(r).boxes))
    rows, maps, shown = [], [], []
    geometry = model.geometry(image.width, image.height, resize)
    roa = geometry.region_to_input(region.clipped(image.width, image.height))
    inside = roa_token_mask([roa], model.image_size, model.patch_size)[0, 1:].reshape(model.grid_size, model.grid_size)
    for prompt in prompts:
        pixels, steering = _prompted(model, image, [region], prompt, resize, rows=1)
        attention = cls_attention_map(model, pixels, layer=layer, steering=steering)[0]
        rows.append({"prompt": prompt.name, "layer": str(layer), "roa_attention_share": float(attention[inside].sum())})
        maps.append(attention.numpy())
        edited = prompt.apply_edits(image, [region])[0][0] if prompt.edits else image
        shown.append(edited)
    plt = _pyplot()
    aspect = image.height / image.width
    figure, axes = plt.subplots(1, len(prompts) + 1, figsize=(3.0 * (len(prompts) + 1) + 0.8, 3.0 * aspect + 1.3),
                                constrained_layout=True)
    axes[0].imshow(image)
    for x0, y0, x1, y1 in region.boxes:
        axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=2))
    axes[0].set_title("image + ROA", fontsize=9)
    top = max(float(attention.max()) for attention in maps)
    extent = _input_extent(geometry)  # the model input's square, in the image's own pixels
    for axis, prompt, attention, edited, row in zip(axes[1:], prompts, maps, shown, rows):
        axis.imshow(edited)
        overlay = axis.imshow(attention, cmap="jet", alpha=0.5, vmin=0, vmax=top, extent=extent,
                              interpolation="nearest")
        axis.set_xlim(0, image.width)
        axis.set_ylim(image.height, 0)
        axis.set_title(f"{prompt.name}\nROA share {row['roa_attention_share']:.2f}", fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(overlay, ax=list(axes[1:]), label="attention (one scale)", shrink=0.85)
    figure.supxlabel(f"each cell: one of the {model.grid_size}x{model.grid_size} patch tokens ({model.patch_size} px of "
                     f"the {model.image_size}-px input), drawn over the image as the input saw it ({resize})", fontsize=8)
    figure.suptitle(f"[CLS] attention, {'rollout' if layer == 'rollout' else f'layer {layer}'}, mean over heads",
                    fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)
    plt.close(figure)
    frame = pd.DataFrame(rows)
    atomic_write_text(path.with_suffix(".csv"), frame.to_csv(index=False, float_format="%.6f"))
    arrays = {prompt.name: attention.astype(np.float32) for prompt, attention in zip(prompts, maps)}

    def write_arrays(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, roa=inside.numpy(), layer=np.array(str(layer)), **arrays)

    atomic_write(path.with_suffix(".npz"), write_arrays)
    return frame


def _input_extent(geometry) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) in original-image pixels of the model input's square: the whole image
    for ``squash``, the centre crop's window for ``crop``."""
    scale_x = geometry.resized_width / geometry.image_width
    scale_y = geometry.resized_height / geometry.image_height
    left, top = geometry.crop_left / scale_x, geometry.crop_top / scale_y
    right = (geometry.crop_left + geometry.input_size) / scale_x
    bottom = (geometry.crop_top + geometry.input_size) / scale_y
    return left, right, bottom, top


# ---------------------------------------------------------------- analyses as experiments (falip-run)
def _head_sensitivity(config: Mapping[str, Any], run: RunSettings, model: FoveatedCLIP,
                      prompts: list[VisualPrompt]) -> None:
    settings = config["analysis"]
    source = TASKS[settings["source"]].from_config(settings.get("source_options") or {"templates": "simple"})
    dataset = materialize(config["dataset"])
    check_dataset(dataset)
    splits = {name: load_dataset_split(dataset, name) for name in dataset["splits"]}
    name, out = config["experiment_name"], _run_folder(config, run)
    with torch.inference_mode():
        head_sensitivity(model, source, splits, prompts, out, name, settings.get("max_items"), run.progress)
    stable = Path(run.output_dir)
    for suffix in (".csv", ".png", ".json"):  # the latest completed run's table, figure and sidecar, as for tables
        atomic_write_bytes(stable / f"{name}{suffix}", (out / f"{name}{suffix}").read_bytes())
    print(f"and the latest run's {name}.csv, .png and .json in {stable}")


def _run_folder(config: Mapping[str, Any], run: RunSettings) -> Path:
    """This analysis run's own folder (``<output_dir>/runs/<experiment>/<run.name or time-hash>/``), printed."""
    folder = create_run_folder(run.output_dir, config["experiment_name"], config_hash(config), run.name)
    print(f"[falip] run folder: {folder}", file=sys.stderr)
    return folder


def _check_attention_maps(config: Mapping[str, Any]) -> None:
    """Before the model loads: the image exists and the boxes are a list of [x0,y0,x1,y1] (or the regions file
    is readable)."""
    if config.get("image") and config.get("regions"):
        raise ConfigError("attention_maps takes image= (with boxes=) or regions= (a file of images and boxes), "
                          "not both")
    if config.get("regions"):
        load_regions(config["regions"], config.get("image_root"))
    if config.get("image"):
        if not Path(config["image"]).is_file():
            raise DatasetError(f"image={config['image']} is not a file")
        parse_boxes(config.get("boxes"))


def _attention_maps(config: Mapping[str, Any], run: RunSettings, model: FoveatedCLIP,
                    prompts: list[VisualPrompt]) -> None:
    """``image=<path> boxes=[[x0,y0,x1,y1], ...]``; without an image, a sandbox-style example is drawn."""
    settings, out = config["analysis"], _run_folder(config, run)
    if config.get("regions"):
        _attention_maps_of_regions_file(config, model, prompts, out)
        return
    if config.get("image"):
        path = Path(config["image"])
        boxes, stem = parse_boxes(config.get("boxes")), path.stem
        try:
            image = read_rgb(path)
        except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
            raise DatasetError(f"image={path} is not a readable image: {type(error).__name__}: {error}") from None
    else:
        image, boxes, stem = example_image(run.seed)
    frame = attention_maps(model, image, [Region(tuple(boxes))], prompts, out / f"{stem}.png",
                           layer=settings.get("layer", -1), resize=settings.get("resize", "squash"))
    print(frame.to_string(index=False))
    print(f"\nwrote {out / f'{stem}.png'}, {out / f'{stem}.csv'} and {out / f'{stem}.npz'}")


def _attention_maps_of_regions_file(config: Mapping[str, Any], model: FoveatedCLIP, prompts: list[VisualPrompt],
                                    out: Path) -> None:
    """``regions=<file>``: one figure, CSV and ``.npz`` per (image, box) of the file, and one CSV over all."""
    settings, regions = config["analysis"], load_regions(config["regions"], config.get("image_root"))
    frames, written = [], []
    for record in regions.images:
        try:
            image = record.load_image()
        except (OSError, ValueError) as error:
            raise DatasetError(f"{record.image_path} is not a readable image: {type(error).__name__}: {error}") from None
        for box_id, box in zip(record.box_ids, record.boxes):
            path = out / f"{Path(record.file_name).stem}_box{box_id}.png"
            frame = attention_maps(model, image, [Region((box,))], prompts, path, layer=settings.get("layer", -1),
                                   resize=settings.get("resize", "squash"))
            frames.append(frame.assign(image_id=record.image_id, file_name=record.file_name, box_id=box_id))
            written += [path, path.with_suffix(".csv"), path.with_suffix(".npz")]
    table = pd.concat(frames, ignore_index=True)
    summary = atomic_write_text(out / "attention_maps.csv", table.to_csv(index=False, float_format="%.6f"))
    print(table.groupby("prompt", sort=False)["roa_attention_share"].describe()[["count", "mean", "min", "max"]]
          .to_string())
    print(f"\nwrote {len(written) // 3} figures with their CSVs and .npz arrays under {out}, and {summary}")


def parse_boxes(value: Any) -> list[tuple[float, ...]]:
    """``boxes=[[x0,y0,x1,y1], ...]`` (pixels of the image) as tuples; anything else is one line with the fix."""
    fix = "write boxes as a list of [x0,y0,x1,y1] lists, e.g. 'boxes=[[40,60,200,300]]' (quoted for the shell)"
    if not value:
        raise ConfigError(f"attention_maps needs boxes with image=: {fix}")
    if not isinstance(value, (list, tuple)) or not all(isinstance(box, (list, tuple)) for box in value):
        raise ConfigError(f"boxes={value!r} is not a list of boxes: {fix}")
    boxes = []
    for box in value:
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise ConfigError(f"box {box!r} of boxes= needs 4 numbers x0,y0,x1,y1: {fix}")
        boxes.append(tuple(float(v) for v in box))
    return boxes


def example_image(seed: int):
    """An example when no image is given: three shapes on noise, the ROA around the first."""
    rng = np.random.default_rng(seed)
    width, height = 96, 80
    image = np.clip(rng.normal(120, 30, (height, width, 3)), 0, 255).astype("uint8")
    boxes = [(8, 10, 34, 36), (52, 30, 82, 62), (14, 50, 40, 74)]
    for (x0, y0, x1, y1), colour in zip(boxes, [(225, 35, 35), (45, 75, 230), (40, 175, 60)]):
        image[y0:y1, x0:x1] = colour
    return Image.fromarray(image), [tuple(float(v) for v in boxes[0])], "example"


def _depth_views(config: Mapping[str, Any], run: RunSettings, model: FoveatedCLIP,
                 prompts: list[VisualPrompt]) -> None:
    """PointCLIP's 6 depth maps of shape ``analysis.sample`` of the dataset's first split, with each view's ROA."""
    settings, out = config["analysis"], _run_folder(config, run)
    dataset = materialize(config["dataset"])
    check_dataset(dataset)
    split = load_dataset_split(dataset, dataset["splits"][0])
    index = int(settings.get("sample", 0))
    if not 0 <= index < len(split.samples):
        raise ConfigError(f"analysis.sample={index} is outside {split.dataset} {split.split} (0..{len(split.samples) - 1})")
    task = TASKS["pointcloud"].from_config(settings)
    item = task.items(split)[index]
    views = item.load_views(model.image_size, model.device)
    label = split.classes[item.sample.label]
    stem = f"{split.dataset}_{split.split}_{index}"
    figure = depth_views_figure(views.pixels, views.regions, model.patch_size, out / f"{stem}.png",
                                title=f"{split.dataset} {split.split} #{index}: {label} ({len(item.sample.points)} points)")
    rows = [{"view": view, "empty": region is None, "box": None if region is None else list(region.boxes[0]),
             "foreground_pixels": 0 if region is None else int(region.mask.sum())}
            for view, region in enumerate(views.regions)]
    frame = pd.DataFrame(rows)
    atomic_write_text(out / f"{stem}.csv", frame.to_csv(index=False))
    print(frame.to_string(index=False))
    print(f"\nwrote {figure} and {out / f'{stem}.csv'}")


# analysis.name -> its runner (config, run settings, model, prompts): figures + CSVs.
ANALYSES = {"head_sensitivity": _head_sensitivity, "attention_maps": _attention_maps, "depth_views": _depth_views}
# What an analysis checks in its config before the model loads (one line for a bad input, no model load).
ANALYSIS_CHECKS = {"attention_maps": _check_attention_maps}
