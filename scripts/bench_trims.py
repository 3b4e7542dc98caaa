#!/usr/bin/env python
"""The exact trims of a biased forward (falip/model/trimmed.py): trimmed vs full forward, in one run.

The REC pipeline's forward as it runs: ``--images`` images x ``--regions`` regions each, the regions of
one image sharing its pixels (``image_index``), FALIP's ``[CLS]``-row bias in the released layers
(the last 4) or all layers. ``trims on`` = the default (last layer: the ``[CLS]`` row only; first biased
layer: patch rows once per image); ``trims off`` = every row of every layer
(``plan=FULL_ROWS``); ``cls_stream`` = the opt-in approximate mode (only ``[CLS]`` recomputed
per region in the biased layers). Interleaved medians of ``--repeats``; speed-up = off / on time; the
largest |difference| of the trimmed embeddings and the smallest cosine of the ``cls_stream`` ones to the
exact ones are written beside it. Writes results/benchmarks/trims.csv.
"""
from __future__ import annotations

import argparse

import torch

from falip import FoveatedCLIP
from falip.experiments.benchmarking import environment_columns, interleaved_medians, write_rows
from falip.model.random_clip import random_clip
from falip.model.steering import FULL_ROWS, ExecutionPlan
from falip.prompts import FovealBias
from falip.sandbox import MODEL_DIR as SANDBOX_MODEL_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit-b16", "sandbox"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--regions", type=int, default=10, help="regions per image (RefCOCO: ~10 candidates)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="results/benchmarks/trims.csv")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        model = FoveatedCLIP.from_pretrained(SANDBOX_MODEL_DIR) if name == "sandbox" else random_clip(name)
        label = "sandbox CLIP (4 x 128, 64 px)" if name == "sandbox" else f"random {name} weights"
        size = model.image_size
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randn(args.images, 3, size, size, generator=generator)
        index = [image for image in range(args.images) for _ in range(args.regions)]
        corners = torch.rand(len(index), 2, 2, generator=generator) * size
        boxes = torch.cat([corners.min(1).values, corners.max(1).values + 16], 1).clamp(max=size).tolist()
        for layers in ((-4, -3, -2, -1), None):
            bias = FovealBias(layers=layers).for_model(model).build(boxes, size, model.patch_size)

            def trimmed():
                return model.encode_image(pixels, bias, layers, image_index=index)

            def full():
                return model.encode_image(pixels, bias, layers, image_index=index, plan=FULL_ROWS)

            def stream():
                return model.encode_image(pixels, bias, layers, image_index=index, plan=ExecutionPlan(cls_stream=True))

            on, off, approximate = interleaved_medians([trimmed, full, stream], args.repeats)
            reference = full()
            difference = float((trimmed() - reference).abs().max())
            cosine = float((stream() * reference).sum(-1).min())
            row = {"model": label, "bias_layers": "all" if layers is None else " ".join(map(str, layers)),
                   "images": args.images, "regions_per_image": args.regions,
                   "trims_on_regions_per_s": round(len(index) / on, 1), "trims_off_regions_per_s": round(len(index) / off, 1),
                   "speedup": round(off / on, 3), "max_abs_embedding_diff": f"{difference:.2e}",
                   "cls_stream_regions_per_s": round(len(index) / approximate, 1),
                   "cls_stream_speedup_vs_full": round(off / approximate, 3),
                   "cls_stream_min_cosine_to_exact": round(cosine, 5),
                   "repeats": args.repeats, **environment_columns()}
            print(row, flush=True)
            rows.append(row)
    print("wrote", write_rows(args.out, rows))


if __name__ == "__main__":
    main()
