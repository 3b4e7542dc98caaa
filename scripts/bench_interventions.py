#!/usr/bin/env python
"""Cost of the attention interventions against a biased forward, measured in one run.

Random weights of ViT-B/16's shape (224 px, 12 x 768, 12 heads), a batch of regions, FALIP's bias in
the last 4 layers. Each variant is timed ``--repeats`` times in alternating order (interleaved
medians, so the machine's drift hits all alike); ratio = variant / biased forward.
Goals: one-pass interventions <= 1.1x (FALIP + Unleash, feature mask, PASTA), two-pass ones <= 2.2x
(replace v / q,k, RedCircle + Unleash: a second, plain forward of the unedited image).
Writes results/benchmarks/interventions.csv.
"""
from __future__ import annotations

import argparse

import torch

from falip.model.steering import Steering

from falip.experiments.benchmarking import environment_columns, interleaved_medians, write_rows
from falip.model.interventions import FeatureMask, ReplaceQueriesKeys, ReplaceValues, Unleash
from falip.model.random_clip import random_clip
from falip.prompts import FovealBias
from falip.prompts.prompt import PastaBias, roa_token_mask

LAST4 = [-4, -3, -2, -1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit-b16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="results/benchmarks/interventions.csv")
    args = parser.parse_args()
    model = random_clip(args.model)
    size, patch = model.image_size, model.patch_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch_size, 3, size, size, generator=generator)
    edited = pixels + 0.1 * torch.randn(pixels.shape, generator=generator)
    boxes = [[size * 0.1, size * 0.2, size * 0.6, size * 0.9]] * args.batch_size
    foveal = FovealBias(alpha=0.2).build(boxes, size, patch)
    pasta = PastaBias().build(boxes, size, patch)
    tokens = roa_token_mask(boxes, size, patch)
    index = list(range(args.batch_size))
    variants = {
        "biased forward (FALIP)": (1, lambda: model.encode_image(pixels, foveal, LAST4)),
        "FALIP + Unleash (one pass)": (1, lambda: model.encode_image(pixels, steering=Steering(bias=foveal, bias_layers=LAST4, intervention=Unleash()))),
        "feature mask (one pass)": (1, lambda: model.encode_image(pixels, steering=Steering(intervention=FeatureMask(), roa_tokens=tokens))),
        "PASTA (one pass)": (1, lambda: model.encode_image(pixels, pasta, LAST4)),
        "RedCircle + Unleash (two passes)": (2, lambda: model.encode_image(edited, steering=Steering(intervention=Unleash(), reference_pixels=pixels, reference_index=index))),
        "replace v (two passes)": (2, lambda: model.encode_image(edited, steering=Steering(intervention=ReplaceValues(), reference_pixels=pixels, reference_index=index))),
        "replace q,k (two passes)": (2, lambda: model.encode_image(edited, steering=Steering(intervention=ReplaceQueriesKeys(), reference_pixels=pixels, reference_index=index))),
    }
    with torch.inference_mode():
        medians = interleaved_medians([function for _, function in variants.values()], args.repeats)
    base = medians[0]
    rows = []
    for (name, (passes, _)), seconds in zip(variants.items(), medians):
        goal = 1.1 if passes == 1 else 2.2
        ratio = seconds / base
        print(f"{name:34s} {seconds * 1000:8.1f} ms  ratio {ratio:.3f}  (goal <= {goal})")
        rows.append({"variant": name, "passes": passes, "batch_size": args.batch_size, "model": f"random {args.model}",
                     "median_ms": f"{seconds * 1000:.1f}", "ratio_to_biased_forward": f"{ratio:.3f}",
                     "goal_ratio": goal, "meets_goal": ratio <= goal, "repeats": args.repeats, **environment_columns()})
    print("wrote", write_rows(args.out, rows))


if __name__ == "__main__":
    main()
