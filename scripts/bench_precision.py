#!/usr/bin/env python
"""Reduced precision against float32, in one run: accuracy per prompt on the sandbox tables, cosine of
the embeddings and forward speed on random ViT-B/16-sized weights.

* Sandbox tables: ``falip-run experiment=<e> run.dtype=<d>`` for each experiment of ``--experiments``
  (the committed sandbox experiments, every prompt, every split), float32 first; per prompt the mean
  accuracy over splits in both dtypes and the largest |change| of one split's accuracy.
* Random weights of ViT-B/16's shape (224 px, 12 x 768): the same ``--batch`` images (smooth random
  fields, not noise) through a plain forward and a FALIP forward (released bias, last 4 layers),
  the model cast to each dtype (weights and activations; the bias is cast to the activation dtype,
  the attention softmax runs in float32 under eager and in the kernel's precision under sdpa): the
  smallest and the mean cosine to the float32 embeddings, the cosine of FALIP's change (biased minus
  plain embedding) to float32's change (random weights attend almost uniformly, so FALIP moves their
  embedding less than bfloat16 rounding does: the change's direction is the telling number), and the forward time (interleaved medians
  of ``--repeats``) as a speed-up over float32.

Dtypes: ``bfloat16`` on CPU; ``float16`` and ``bfloat16`` on CUDA when a GPU is present. Writes
results/benchmarks/precision.csv (one row per measure).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from falip.experiments.benchmarking import environment_columns, interleaved_medians, write_rows
from falip.model.random_clip import random_clip
from falip.prompts import FovealBias


def table(path: Path) -> dict[str, list[float]]:
    """prompt -> accuracies over the splits of a table CSV."""
    with path.open() as handle:
        return {row["prompt"]: [float(v) for k, v in row.items() if k != "prompt"] for row in csv.DictReader(handle)}


def run_experiment(experiment: str, dtype: str, device: str, out: Path) -> tuple[dict[str, list[float]], float]:
    command = [sys.executable, "-m", "falip.cli", f"experiment={experiment}", f"run.dtype={dtype}",
               f"run.device={device}", f"run.output_dir={out}", "run.progress=false"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    sidecar = json.loads((out / f"{experiment}.json").read_text())
    return table(out / f"{experiment}.csv"), float(sidecar["wall_time_s"])


def smooth_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Normalised-pixel-like inputs: random 7x7 fields upsampled bicubically (natural images are smooth)."""
    coarse = torch.randn(count, 3, 7, 7, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=["shapes_rec", "shapes_cls", "shapes_3d"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--attn", nargs="+", default=["sdpa", "eager"])
    parser.add_argument("--out", default="results/benchmarks/precision.csv")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = ["float16", "bfloat16"] if device == "cuda" else ["bfloat16"]
    rows, env = [], environment_columns()
    work = Path(tempfile.mkdtemp(prefix="falip-precision-"))

    def row(dtype, model, workload, prompt, measure, reference, value, difference=""):
        rows.append({"dtype": dtype, "model": model, "workload": workload, "prompt": prompt, "measure": measure,
                     "float32": reference, "reduced": value, "difference": difference, **env})

    for experiment in args.experiments:
        reference, reference_wall = run_experiment(experiment, "float32", device, work / experiment / "float32")
        for dtype in dtypes:
            reduced, wall = run_experiment(experiment, dtype, device, work / experiment / dtype)
            for prompt, accuracies in reference.items():
                mean32, mean = statistics.mean(accuracies), statistics.mean(reduced[prompt])
                worst = max(abs(a - b) for a, b in zip(accuracies, reduced[prompt]))
                row(dtype, "sandbox CLIP", experiment, prompt, "accuracy, mean over splits",
                    f"{mean32:.2f}", f"{mean:.2f}", f"{mean - mean32:+.2f}")
                row(dtype, "sandbox CLIP", experiment, prompt, "largest |accuracy change| of one split",
                    "", "", f"{worst:.2f}")
                print(f"{experiment:11s} {dtype:9s} {prompt:34s} {mean32:6.2f} -> {mean:6.2f} (worst split {worst:.2f})")
            row(dtype, "sandbox CLIP", experiment, "all", "experiment wall time, s (speed-up in difference)",
                f"{reference_wall:.1f}", f"{wall:.1f}", f"{reference_wall / wall:.2f}x")

    for attn in args.attn:
        model32 = random_clip("vit-b16", attn_implementation=attn).to(device)
        size = model32.image_size
        pixels = smooth_images(args.batch, size).to(device)
        corners = [(size * (0.05 + 0.15 * (k % 3)), size * (0.1 + 0.2 * (k % 2))) for k in range(args.batch)]
        boxes = [[x, y, x + size * 0.45, y + size * 0.5] for x, y in corners]
        bias = FovealBias(layers=(-4, -3, -2, -1)).for_model(model32).build(boxes, size, model32.patch_size)
        layers = (-4, -3, -2, -1)
        with torch.inference_mode():
            plain32 = model32.encode_image(pixels)
            biased32 = model32.encode_image(pixels, bias, layers)
        for dtype in dtypes:
            model = random_clip("vit-b16", attn_implementation=attn, dtype=getattr(torch, dtype)).to(device)
            with torch.inference_mode():
                plain = model.encode_image(pixels.to(model.dtype)).float()
                biased = model.encode_image(pixels.to(model.dtype), bias, layers).float()
            workload = f"{args.batch} smooth random images, attn {attn}"
            for prompt, exact, approx in (("no prompt", plain32, plain), ("FALIP (last 4 layers)", biased32, biased)):
                cosine = F.cosine_similarity(exact, approx, dim=-1)
                row(dtype, "random vit-b16 weights", workload, prompt, "min cosine to float32", "1", f"{cosine.min():.6f}")
                row(dtype, "random vit-b16 weights", workload, prompt, "mean cosine to float32", "1", f"{cosine.mean():.6f}")
                print(f"vit-b16 {attn:5s} {dtype:9s} {prompt:22s} cosine min {cosine.min():.6f} mean {cosine.mean():.6f}")
            # FALIP's own effect, for scale: how far the bias moves the float32 embedding, and whether the
            # reduced dtype keeps the direction of that move (biased - plain, both in the reduced dtype)
            moved = F.cosine_similarity(plain32, biased32, dim=-1).mean()
            row("float32", "random vit-b16 weights", workload, "FALIP (last 4 layers)",
                "mean cosine, FALIP vs no prompt (the bias's own effect, for scale)", f"{moved:.6f}", "")
            change = F.cosine_similarity(biased32 - plain32, biased - plain, dim=-1)
            row(dtype, "random vit-b16 weights", workload, "FALIP (last 4 layers)",
                "min cosine of FALIP's change (biased - no prompt) to float32's", "1", f"{change.min():.6f}")
            print(f"vit-b16 {attn:5s} {dtype:9s} FALIP's own change: cosine to no prompt {moved:.6f}; "
                  f"direction of the change kept to cosine {change.min():.4f}")

            def forward(m, p):
                return lambda: m.encode_image(p, bias, layers)
            with torch.inference_mode():
                t32, t = interleaved_medians([forward(model32, pixels), forward(model, pixels.to(model.dtype))], args.repeats)
            row(dtype, "random vit-b16 weights", workload, "FALIP (last 4 layers)",
                f"forward s per batch of {args.batch} (speed-up in difference)", f"{t32:.3f}", f"{t:.3f}", f"{t32 / t:.2f}x")
            print(f"vit-b16 {attn:5s} {dtype:9s} forward {t32:.3f} s (float32) vs {t:.3f} s: {t32 / t:.2f}x")
    print("wrote", write_rows(args.out, rows))


if __name__ == "__main__":
    main()
