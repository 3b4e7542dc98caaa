#!/usr/bin/env python
"""Throughput of the whole REC pipeline vs a raw batched forward of the same model, in one run.

Pipeline = the experiments' loop (`evaluate_split` with the REC task) and the FALIP prompt over a REC dataset on disk (refer layout of
sandbox scenes): image decoding, squash resize, bias construction, batched biased forwards, text
encoding, scoring and the predictions file. Raw = `encode_image` on ready-made pixel and bias
tensors, same batch size, same number of rows. After a warm-up, both are timed `--repeats` times,
alternating which goes first; ratio = median over repeats of (pipeline regions/s / raw regions/s),
each pair measured back to back so that the machine's drift cancels (goal >= 0.9); the range of the
paired ratios and the median rates are written beside it.
Models: the shipped sandbox CLIP, and random weights of ViT-B/16's shape (224 px, 12 x 768).
Writes results/benchmarks/rec_throughput.csv.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from falip import FoveatedCLIP
from falip.data.rec.loading import load_rec_split
from falip.encoding.text import TextCache
from falip.experiments.benchmarking import environment_columns, write_rows
from falip.experiments.generated import build_generated_dataset
from falip.experiments.runner import LoopOptions, evaluate_split
from falip.model.random_clip import random_clip
from falip.prompts import FovealBias, VisualPrompt
from falip.sandbox import MODEL_DIR as SANDBOX_MODEL_DIR
from falip.tasks.rec import RecTask, limit_split

GOAL = 0.9


def raw_rate(model: FoveatedCLIP, rows: int, batch_size: int, layers, regions_per_image: float | None = None) -> float:
    """Region embeddings/s of ``encode_image`` on ready-made pixels and bias, ``batch_size`` rows a call.

    ``regions_per_image=None``: one pixel row per region (the plain batched forward). Otherwise the
    rows of a batch read ``ceil(batch / regions_per_image)`` images through ``image_index``, as the
    pipeline passes them: the same computation as the pipeline's forwards, minus everything else.
    """
    size = model.image_size
    pixels = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[size * 0.1, size * 0.2, size * 0.6, size * 0.9]] * batch_size)
    bias = FovealBias(layers=layers).for_model(model).build(boxes.tolist(), size, model.patch_size)
    started, done = time.perf_counter(), 0
    with torch.inference_mode():
        while done < rows:
            count = min(batch_size, rows - done)
            if regions_per_image is None:
                model.encode_image(pixels[:count], bias[:count], layers)
            else:
                index = [int(row // regions_per_image) for row in range(count)]
                model.encode_image(pixels[:index[-1] + 1], bias[:count], layers, image_index=index)
            done += count
    return rows / (time.perf_counter() - started)


def pipeline_rate(model, split, prompt, batch_size: int, workers: int, out: Path) -> tuple[float, int]:
    options = LoopOptions(batch_size=batch_size, num_workers=workers, progress=False)
    started = time.perf_counter()
    with torch.inference_mode():
        result = evaluate_split(model, RecTask(), split, [prompt], TextCache(model), options, out)
    rows = result.image_forwards[prompt.name]
    return rows / (time.perf_counter() - started), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sandbox", "vit-b16"])
    parser.add_argument("--scenes", type=int, default=200, help="3-object scenes for the sandbox model")
    parser.add_argument("--vit-scenes", type=int, default=20,
                        help="3-object scenes for ViT-B/16-sized weights (about 4 regions/s on 2 CPU cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats for the sandbox model")
    parser.add_argument("--vit-repeats", type=int, default=3, help="timed repeats for ViT-B/16-sized weights")
    parser.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads()],
                        help="torch intra-op threads for the forward (each setting is measured with every --workers)")
    parser.add_argument("--out", default="results/benchmarks/rec_throughput.csv")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="falip-bench-"))
    root = build_generated_dataset({"_target_": "falip.sandbox.datasets.write_shapes_rec", "seed": 99, "scenes_per_split": max(args.scenes, args.vit_scenes),
                                    "width": 96, "height": 80, "splits": {"objects3": 3}}, work / "data")
    full = load_rec_split("shapes", "objects3", root=root, layout="refer", split_by="synthetic")
    rows_out = []
    for name in args.models:
        if name == "sandbox":
            model, label = FoveatedCLIP.from_pretrained(SANDBOX_MODEL_DIR), "sandbox CLIP (4 x 128, 64 px)"
            layers, scenes, repeats = None, args.scenes, args.repeats
        else:
            model, label = random_clip(name), f"random {name} weights"
            layers, scenes, repeats = (-4, -3, -2, -1), args.vit_scenes, args.vit_repeats
        split = limit_split(full, 3 * scenes)
        prompt = VisualPrompt("FALIP", bias=FovealBias(layers=layers))
        per_image = 3.0  # regions per image of these scenes: the shared raw forward's image_index
        for threads, workers in [(t, w) for t in args.threads for w in args.workers]:
            torch.set_num_threads(threads)
            rates = {"pipeline": [], "raw": [], "shared": []}
            _, rows = pipeline_rate(model, split, prompt, args.batch_size, workers, work / "pred.jsonl")  # warm-up
            measure = {
                "pipeline": lambda: pipeline_rate(model, split, prompt, args.batch_size, workers, work / "pred.jsonl")[0],
                "raw": lambda: raw_rate(model, rows, args.batch_size, layers),
                "shared": lambda: raw_rate(model, rows, args.batch_size, layers, per_image),
            }
            order = list(measure)
            for repeat in range(repeats):  # rotate which side goes first, so drift hits all three
                for side in order[repeat % 3:] + order[:repeat % 3]:
                    rates[side].append(measure[side]())
            medians = {side: statistics.median(values) for side, values in rates.items()}
            # each triple was measured back to back: ratios within a repeat cancel the machine's drift
            paired = sorted(p / r for p, r in zip(rates["pipeline"], rates["raw"]))
            overhead = sorted(p / r for p, r in zip(rates["pipeline"], rates["shared"]))
            ratio, same_work = statistics.median(paired), statistics.median(overhead)
            print(f"{label:32s} threads={threads} workers={workers}: pipeline {medians['pipeline']:8.1f} regions/s, raw forward "
                  f"{medians['raw']:8.1f} regions/s, ratio {ratio:.3f} (paired {paired[0]:.3f}-{paired[-1]:.3f}; "
                  f"goal >= {GOAL}); vs raw forward with the pipeline's image sharing "
                  f"{medians['shared']:8.1f} regions/s, ratio {same_work:.3f}")
            rows_out.append({"model": label, "prompt": "FALIP (cls bias)", "bias_layers": "all" if layers is None else
                             " ".join(map(str, layers)), "dataset": f"{scenes} scenes x 3 objects, 96x80",
                             "regions": rows, "batch_size": args.batch_size, "torch_threads": threads, "dataloader_workers": workers,
                             "pipeline_regions_per_s": f"{medians['pipeline']:.1f}",
                             "raw_forward_regions_per_s": f"{medians['raw']:.1f}",
                             "ratio_pipeline_over_raw": f"{ratio:.3f}", "paired_ratio_min": f"{paired[0]:.3f}",
                             "paired_ratio_max": f"{paired[-1]:.3f}", "goal_ratio": GOAL, "meets_goal": ratio >= GOAL,
                             "shared_raw_forward_regions_per_s": f"{medians['shared']:.1f}",
                             "ratio_pipeline_over_shared_raw": f"{same_work:.3f}",
                             "repeats": repeats, **environment_columns()})
    print("wrote", write_rows(args.out, rows_out))


if __name__ == "__main__":
    main()
