"""Analyses that look inside the model instead of scoring it: head sensitivity and attention maps.

* :func:`head_sensitivity` -- over a split's regions, the mean ``||G'_h - G_h||`` per layer x head,
  ``G'`` a head's contribution to the [CLS] update under a prompt (edited pixels and/or bias), ``G``
  the same head on the unedited image without a bias (paper section "Unleash": the last layers
  change most). CSV + one heatmap PNG per prompt.
* :func:`attention_maps` -- for an image and its ROA, [CLS]'s attention over the patches (a layer, or
  the rollout) under each prompt, side by side, plus the share of it inside the ROA. PNG + CSV.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..encoding.regions import prepare_regions
from ..geometry import Region
from ..io import atomic_write_text, write_json
from ..model.attention_maps import cls_attention_map
from ..model.clip import FoveatedCLIP
from ..model.heads import head_contributions
from ..prompts.prompt import VisualPrompt, roa_token_mask
from ..tasks.base import Task
from .plots import _pyplot, heatmap, save_figure
from .provenance import environment, git_state, utc_now


def _prompted(model: FoveatedCLIP, image: Image.Image, regions: Sequence, prompt: VisualPrompt, resize: str):
    """Pixels (one row per region), the prompt's bias for them and its layers."""
    inputs = prepare_regions(model.preprocessor, image, regions, prompt, resize)
    pixels = inputs.pixels.expand(inputs.rows, -1, -1, -1) if inputs.pixels.shape[0] == 1 else inputs.pixels
    bias, layers = None, None
    if prompt.bias is not None:
        bias_spec = prompt.bias.for_model(model)
        bias = bias_spec.build(inputs.input_regions, model.image_size, model.patch_size,
                               num_heads=model.num_heads)
        layers = list(bias_spec.layers) if bias_spec.layers is not None else None
    return pixels, bias, layers, inputs


def head_sensitivity(model: FoveatedCLIP, task: Task, splits: Mapping[str, Any], prompts: Sequence[VisualPrompt],
                     output_dir: Path, name: str, max_items: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Mean ``||G'_h - G_h||`` per (prompt, layer, head) over every region of the splits' items."""
    sums = {prompt.name: torch.zeros(model.num_layers, model.num_heads)
            for prompt in prompts}
    count = 0
    for split in splits.values():
        items, regions = task.items(split), task.regions(split)
        limit = len(items) if max_items is None else min(max_items, len(items))
        for index in tqdm(range(limit), desc=f"{name} {getattr(split, 'split', '')}", disable=not progress, leave=False):
            image = items[index].load_image()
            plain = head_contributions(model, model.preprocess(image, task.resize))  # (1, L, H, W)
            for prompt in prompts:
                pixels, bias, layers, _ = _prompted(model, image, regions[index], prompt, task.resize)
                prompted = head_contributions(model, pixels, attention_bias=bias, bias_layers=layers)
                sums[prompt.name] += (prompted - plain).norm(dim=-1).sum(0)
            count += len(regions[index])
    rows = [{"prompt": prompt, "layer": layer, "head": head, "mean_change": float(total[layer, head] / count)}
            for prompt, total in sums.items() for layer in range(total.shape[0]) for head in range(total.shape[1])]
    frame = pd.DataFrame(rows)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / f"{name}.csv", frame.to_csv(index=False, float_format="%.6f"))
    figures = []
    for prompt, total in sums.items():
        safe = "".join(ch if ch.isalnum() else "_" for ch in prompt)
        figures.append(str(heatmap((total / count).numpy(), output_dir / f"{name}_{safe}.png",
                                   f"{prompt}: mean ||G'_h - G_h|| of the [CLS] update ({count} regions)",
                                   [str(layer) for layer in range(total.shape[0])],
                                   [str(head) for head in range(total.shape[1])], "change")))
    by_layer = frame.groupby(["prompt", "layer"], sort=False)["mean_change"].mean().unstack("layer")
    print(f"\n{name}: mean change per layer (over heads), {count} regions\n{by_layer.round(4).to_string()}")
    write_json(output_dir / f"{name}.json", {"experiment": name, "status": "complete", "updated": utc_now(),
                                             "regions": count, "figures": figures, "model": model.source,
                                             "code": {**git_state(), "falip": environment()["falip"]}})
    print(f"\nwrote {output_dir / f'{name}.csv'} and {len(figures)} heatmap(s)")
    return frame


def attention_maps(model: FoveatedCLIP, image: Image.Image, regions: Sequence, prompts: Sequence[VisualPrompt],
                   path: Path, layer: int | str = -1, resize: str = "squash") -> pd.DataFrame:
    """One figure: the image with its ROA, then [CLS]'s patch attention under each prompt; returns the
    share of attention inside the ROA per prompt (also written as ``<path>.csv``)."""
    region = Region.of(regions[0]) if len(regions) == 1 else Region(tuple(b for r in regions for b in Region.of(r).boxes))
    rows, maps, shown = [], [], []
    geometry = model.geometry(image.width, image.height, resize)
    roa = geometry.region_to_input(region.clipped(image.width, image.height))
    inside = roa_token_mask([roa], model.image_size, model.patch_size)[0, 1:].reshape(model.grid_size, model.grid_size)
    for prompt in prompts:
        pixels, bias, layers, _ = _prompted(model, image, [region], prompt, resize)
        attention = cls_attention_map(model, pixels[:1], None if bias is None else bias[:1], layers, layer)[0]
        rows.append({"prompt": prompt.name, "layer": str(layer), "roa_attention_share": float(attention[inside].sum())})
        maps.append(attention.numpy())
        edited = prompt.apply_edits(image, [region])[0][0] if prompt.edits else image
        shown.append(edited)
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(prompts) + 1, figsize=(3.2 * (len(prompts) + 1), 3.4))
    axes[0].imshow(image)
    for x0, y0, x1, y1 in region.boxes:
        axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=2))
    axes[0].set_title("image + ROA", fontsize=9)
    for axis, prompt, attention, edited, row in zip(axes[1:], prompts, maps, shown, rows):
        axis.imshow(edited.resize((model.image_size, model.image_size)))
        axis.imshow(np.kron(attention, np.ones((model.patch_size, model.patch_size))), cmap="jet", alpha=0.5)
        axis.set_title(f"{prompt.name}\nROA share {row['roa_attention_share']:.2f}", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(f"[CLS] attention, {'rollout' if layer == 'rollout' else f'layer {layer}'}, mean over heads",
                    fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)
    plt.close(figure)
    frame = pd.DataFrame(rows)
    atomic_write_text(path.with_suffix(".csv"), frame.to_csv(index=False, float_format="%.6f"))
    return frame
