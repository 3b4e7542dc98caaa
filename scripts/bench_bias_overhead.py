#!/usr/bin/env python
"""Cost of the foveal bias: plain vs biased forward of a ViT-B/16-sized vision tower, one run.

Random weights of OpenAI ViT-B/16's shape (224 px, patch 16, 12 x 768) -- speed does not depend on
the values. For each attention implementation and bias-layer set, the plain and biased forwards of
the same batch are timed interleaved and the ratio of medians is reported (goal <= 1.03).
Writes results/benchmarks/bias_overhead.csv.
"""
from __future__ import annotations

import argparse

import torch

from falip import foveal_attention_bias
from falip.experiments.benchmarking import environment_columns, interleaved_medians, write_rows
from falip.model.random_clip import random_clip

GOAL = 1.03


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-b16", help="random model shape (vit-b16 or tiny)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timed repeats (noise here is a few %%)")
    parser.add_argument("--impls", nargs="+", default=["sdpa", "eager"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default="results/benchmarks/bias_overhead.csv")
    args = parser.parse_args()

    rows = []
    for impl in args.impls:
        model = random_clip(args.preset, seed=0, attn_implementation=impl,
                            dtype=getattr(torch, args.dtype)).to(args.device)
        size, patch, layers = model.image_size, model.patch_size, model.num_layers
        pixels = torch.randn(args.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
        boxes = torch.tensor([[size * 0.1 + i, size * 0.2, size * 0.6 + i, size * 0.9] for i in range(args.batch_size)])
        bias = foveal_attention_bias(boxes, size, patch)
        for label, bias_layers in (("last4", [-4, -3, -2, -1]), ("all", None)):
            with torch.inference_mode():
                plain_s, biased_s = interleaved_medians(
                    [lambda: model.encode_image(pixels),
                     lambda: model.encode_image(pixels, bias, bias_layers=bias_layers)], args.repeats)
            build_s = interleaved_medians([lambda: foveal_attention_bias(boxes, size, patch)], args.repeats)[0]
            rows.append({
                "model": f"random {args.preset} ({layers} layers, {model.num_tokens} tokens)",
                "attn_implementation": impl, "bias_layers": label, "batch_size": args.batch_size,
                "dtype": args.dtype, "plain_forward_ms": f"{plain_s * 1e3:.1f}",
                "biased_forward_ms": f"{biased_s * 1e3:.1f}", "ratio_biased_over_plain": f"{biased_s / plain_s:.4f}",
                "goal_ratio": GOAL, "meets_goal": biased_s / plain_s <= GOAL,
                "bias_build_ms": f"{build_s * 1e3:.2f}", "repeats": args.repeats, **environment_columns(),
            })
            print(f"{impl:5s} bias on {label:5s}: plain {plain_s*1e3:8.1f} ms  biased {biased_s*1e3:8.1f} ms  "
                  f"ratio {biased_s/plain_s:.3f} (goal <= {GOAL})  bias build {build_s*1e3:.2f} ms")
    print("wrote", write_rows(args.out, rows))


if __name__ == "__main__":
    main()
