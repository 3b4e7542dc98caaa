#!/usr/bin/env python
"""One run on a GPU: correctness against the CPU, reduced precision, throughput, and a time plan per table.

Writes ``results/benchmarks/gpu.csv``: one row per measure (``section``, ``measure``, ``value``, ``unit``,
``detail``) with the device name and the torch / CUDA versions in every row. Sections:

* ``correctness`` -- ViT-B/16-sized random weights and the sandbox CLIP, the same inputs on ``--device``
  and on the CPU, float32: the largest |difference| of the embeddings, plain, FALIP (the released bias on
  the last 4 layers) and FALIP + Unleash (an intervention).
* ``precision`` -- float16 and bfloat16 against float32 on ``--device``: every cell of the sandbox tables
  (``shapes_rec``, ``shapes_cls``, ``shapes_3d``; the largest |change| in accuracy points), and on
  ViT-B/16-sized random weights the share of REC picks (argmax over each image's candidates for random
  unit "texts", FALIP alpha 0.2) that change -- FALIP's margin at alpha 0.2 is small, so this says whether
  float16 is safe.
* ``throughput`` -- region embeddings/s of the REC pipeline (``evaluate_split`` on COCO-like 640x480 JPEG
  scenes, every layer before the first biased one once per image, exact trims) for ViT-B/16 in each dtype
  and batch size (and ``run.num_workers``), the raw batched forward's images/s and its share of the
  device's dense peak (a 224-px ViT-B/16 forward is ~35.1 GFLOP; ViT-L/14 ~161 GFLOP), and the same for
  ViT-L/14-sized weights; the pipeline's region embeddings/s over the raw forward's images/s.
* ``plan`` -- the expected time of each paper table on this device at the best measured pipeline rate,
  from the tables' region-embedding counts (REC: candidates x prompts per image; classification: samples x
  prompts; point clouds: 6 views x shapes x prompts). Classification and point-cloud sizes are the official
  test splits' (docs/datasets.md); the REC splits' image counts are the refer toolkit's published split
  statistics as we recall them (check with your copy: the plan scales linearly) and candidates per image an
  estimate (COCO's mean of 7.3 annotations per image): both are stated in the row.

``--quick`` shrinks everything (tiny images, few batches, bfloat16 only on a CPU) so that the script is
tested on a CPU (``tests/test_bench_gpu.py``); on a GPU, the default sizes finish in about 8 minutes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from falip import FoveatedCLIP
from falip.data.rec.loading import load_rec_split
from falip.encoding.text import TextCache
from falip.experiments.benchmarking import interleaved_medians, write_rows
from falip.experiments.runner import LoopOptions, evaluate_split
from falip.model.interventions import Unleash
from falip.model.random_clip import random_clip
from falip.model.steering import Steering
from falip.prompts import FovealBias, VisualPrompt
from falip.sandbox import MODEL_DIR as SANDBOX_MODEL_DIR
from falip.tasks.rec import RecTask

LAST4 = [-4, -3, -2, -1]
GFLOP_PER_FORWARD = {"vit-b16": 35.1, "vit-l14": 161.0}  # 224-px forwards (timm's model tables)
# Dense (no sparsity) tensor-core peaks in TFLOP/s for float16 / bfloat16, from the vendors' data sheets.
DENSE_PEAK_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}
# Classification / point clouds: official test-split sizes (docs/datasets.md). REC: (images, sentences) per
# split as published with the refer toolkit, recalled rather than read here (an estimate: see the docstring).
REC_SPLITS = {"RefCOCO val": (1500, 10834), "RefCOCO testA": (750, 5657), "RefCOCO testB": (750, 5095),
              "RefCOCO+ val": (1500, 10758), "RefCOCO+ testA": (750, 5726), "RefCOCO+ testB": (750, 4889),
              "RefCOCOg val": (1300, 4896), "RefCOCOg test": (2600, 9602)}
COCO_CANDIDATES_PER_IMAGE = 7.3
CLS_SAMPLES = {"StanfordDogs": 8580, "CUB-200": 5794, "ImageNet-S919": 12419, "Waterbirds": 5794}
PC_SHAPES = {"ModelNet40": 2468, "ScanObjectNN PB_T50_RS": 2882}


def load_bench_rec():
    """scripts/bench_rec.py as a module (its COCO-like scene writer)."""
    path = Path(__file__).resolve().parent / "bench_rec.py"
    spec = importlib.util.spec_from_file_location("bench_rec", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def device_columns(device: torch.device) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda or "none"}


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in DENSE_PEAK_TFLOPS.items() if key in name), None)


class Rows:
    """The measured rows, rewritten to ``out`` after each one: a run stopped early keeps what it measured."""

    def __init__(self, columns: dict[str, str], out: str | Path):
        self.columns, self.rows, self.out = columns, [], out

    def add(self, section: str, measure: str, value: float | str, unit: str, detail: str = "") -> None:
        row = {"section": section, "measure": measure, "value": value, "unit": unit, "detail": detail, **self.columns}
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        write_rows(self.out, self.rows)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def boxes_for(count: int, size: int, generator: torch.Generator) -> list[tuple[float, ...]]:
    corners = torch.rand(count, 2, 2, generator=generator) * size * 0.8
    low, high = corners.min(1).values, corners.max(1).values + size * 0.15
    return torch.cat([low, high.clamp(max=size)], 1).tolist()


def correctness(rows: Rows, device: torch.device, quick: bool) -> None:
    """Embeddings on the device vs the CPU, float32: plain, FALIP, FALIP + Unleash."""
    models = {"sandbox": lambda: FoveatedCLIP.from_pretrained(SANDBOX_MODEL_DIR)}
    if not quick:
        models["vit-b16 (random)"] = lambda: random_clip("vit-b16", seed=1)
    for label, build in models.items():
        cpu_model = build()
        accel = build().to(device)
        size = cpu_model.image_size
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randn(4, 3, size, size, generator=generator)
        bias = FovealBias(alpha=0.2).for_model(cpu_model).build(boxes_for(4, size, generator), size,
                                                                cpu_model.patch_size)
        cases = {"plain": Steering(), "FALIP": Steering(bias=bias, bias_layers=LAST4),
                 "FALIP + Unleash": Steering(bias=bias, bias_layers=LAST4, intervention=Unleash())}
        for case, steering in cases.items():
            on_cpu = cpu_model.encode_image(pixels, steering=steering)
            on_device = accel.encode_image(pixels, steering=steering).float().cpu()
            rows.add("correctness", f"{label}: {case}, max |device - cpu|", f"{(on_device - on_cpu).abs().max():.3e}",
                     "embedding units", "float32 on both; L2-normalised embeddings")


def sandbox_cells(experiment: str, dtype: str, device: str, out: Path, limit: int | None) -> dict[tuple[str, str], float]:
    """(prompt, column) -> value of ``falip-run experiment=<e>`` in ``dtype`` on ``device``."""
    import pandas as pd

    folder = out / f"{experiment}-{dtype}"
    command = [sys.executable, "-m", "falip.cli", f"experiment={experiment}", f"run.dtype={dtype}",
               f"run.device={device}", "run.progress=false", f"run.output_dir={folder}", "run.batch_size=256"]
    if limit:
        command.append(f"run.limit={limit}")
    subprocess.run(command, check=True, capture_output=True, text=True)
    table = pd.read_csv(folder / f"{experiment}.csv", index_col=0)
    return {(prompt, column): float(value) for prompt, row in table.iterrows() for column, value in row.items()}


def sandbox_precision(rows: Rows, device: torch.device, dtypes: list[str], quick: bool, work: Path,
                      budget: "Budget") -> None:
    """Every cell of the sandbox tables in each reduced dtype against float32 on ``device``."""
    experiments = ["shapes_rec"] if quick else ["shapes_rec", "shapes_cls", "shapes_3d"]
    limit = 12 if quick else None
    for experiment in experiments:
        if budget.spent(f"{experiment} precision"):
            continue
        reference = sandbox_cells(experiment, "float32", str(device), work, limit)
        for dtype in dtypes:
            cells = sandbox_cells(experiment, dtype, str(device), work, limit)
            change = max(abs(cells[key] - value) for key, value in reference.items())
            rows.add("precision", f"{experiment}: largest |{dtype} - float32| cell", round(change, 3),
                     "accuracy points", f"{len(reference)} cells, every prompt and split" + (
                         f", run.limit={limit}" if limit else ""))


def pick_changes(rows: Rows, device: torch.device, dtypes: list[str], quick: bool) -> None:
    """On ViT-B/16-sized random weights: the share of REC picks that a reduced dtype changes."""
    preset = "tiny" if quick else "vit-b16"
    images, candidates = (4, 4) if quick else (512, 8)
    base = random_clip(preset, seed=2).to(device)
    size = base.image_size
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(images, 3, size, size, generator=generator)
    index = torch.arange(images).repeat_interleave(candidates)
    bias = FovealBias(alpha=0.2).for_model(base).build(boxes_for(images * candidates, size, generator), size,
                                                       base.patch_size)
    texts = torch.nn.functional.normalize(torch.randn(images, base.text.width, generator=generator), dim=-1)

    def scores_of(model: FoveatedCLIP) -> torch.Tensor:
        chunks = []
        for start in range(0, images, 128):  # 128 images (1,024 regions) per forward
            rows_ = slice(start * candidates, min(images, start + 128) * candidates)
            chunk = model.encode_image(pixels[start:start + 128], bias[rows_], LAST4,
                                       image_index=index[rows_] - start).float().cpu()
            chunks.append(chunk)
        embeddings = torch.cat(chunks)
        return (embeddings.view(images, candidates, -1) * texts[:, None]).sum(-1)

    reference = scores_of(base)
    top2 = reference.topk(2, dim=1).values
    gap = float((top2[:, 0] - top2[:, 1]).median())
    for dtype in dtypes:
        model = random_clip(preset, seed=2, dtype=getattr(torch, dtype)).to(device)
        scores = scores_of(model)
        changed = float((scores.argmax(1) != reference.argmax(1)).float().mean())
        drift = float((scores - reference).abs().median())
        rows.add("precision", f"{preset} (random) REC picks changed, {dtype} vs float32", round(100 * changed, 2), "%",
                 f"{images} images x {candidates} candidates, FALIP alpha 0.2, last 4 layers; median score change "
                 f"{drift:.2e} against a median top-2 gap of {gap:.2e} (random weights: real CLIP's gaps differ)")


def raw_forward_rate(model: FoveatedCLIP, batch: int, repeats: int) -> float:
    """Images/s of the plain batched forward (every layer, every row) on ready-made pixels."""
    pixels = torch.randn(batch, 3, model.image_size, model.image_size, device=model.device, dtype=model.dtype)
    with torch.inference_mode():
        (median,) = interleaved_medians([lambda: model.encode_image(pixels)], repeats)
    return batch / median


def shared_forward_rate(model: FoveatedCLIP, images: int, candidates: int, repeats: int) -> float:
    """Region embeddings/s of the GPU work alone of the REC pipeline: ready-made pixels and biases on the
    device, each image passing its unbiased layers once (``image_index``), FALIP in the last 4 layers."""
    generator = torch.Generator().manual_seed(4)
    size = model.image_size
    pixels = torch.randn(images, 3, size, size, generator=generator).to(model.device, model.dtype)
    bias = FovealBias(alpha=0.2).for_model(model).build(boxes_for(images * candidates, size, generator), size,
                                                        model.patch_size).to(model.device)
    index = torch.arange(images, device=model.device).repeat_interleave(candidates)
    with torch.inference_mode():
        (median,) = interleaved_medians([lambda: model.encode_image(pixels, bias, LAST4, image_index=index)], repeats)
    return images * candidates / median


def pipeline_rate(model: FoveatedCLIP, split, batch: int, num_workers: int, path: Path) -> float:
    """Region embeddings/s of ``evaluate_split`` (decode, resize, bias, forwards, scoring, predictions file)."""
    options = LoopOptions(batch_size=batch, num_workers=num_workers, progress=False)
    prompt = VisualPrompt("FALIP", bias=FovealBias(alpha=0.2))
    path.unlink(missing_ok=True)
    synchronize(model.device)
    started = time.perf_counter()
    with torch.inference_mode():
        evaluate_split(model, RecTask(), split, [prompt], TextCache(model), options, path)
    synchronize(model.device)
    return split.num_candidates / (time.perf_counter() - started)


def throughput(rows: Rows, device: torch.device, dtypes: list[str], quick: bool, work: Path,
               budget: "Budget") -> float:
    """Returns the best REC pipeline rate (region embeddings/s) of ViT-B/16, for the plan.

    Order of importance (the run may stop at its time budget): ViT-B/16 in the first reduced precision
    (the full grid of batch sizes and workers), then its other dtypes at the best setting, then ViT-L/14."""
    bench_rec = load_bench_rec()
    images, candidates = (6, 4) if quick else (512, 8)
    root = bench_rec.write_coco_like(work / "coco", images, candidates).parent
    split = load_rec_split("shapes", "testA", root=root, layout="refer", split_by="synthetic")
    batches = [8] if quick else [256, 1024]
    workers = [0] if quick else [0, 8, 14]
    repeats = 1 if quick else 5
    presets = ["tiny"] if quick else ["vit-b16", "vit-l14"]
    peak = peak_tflops(device_columns(device)["device_name"])
    best = 0.0
    for preset in presets:
        for position, dtype in enumerate([*dtypes, "float32"]):
            if budget.spent(f"{preset} {dtype} throughput"):
                continue
            model = random_clip(preset, seed=3, dtype=getattr(torch, dtype)).to(device)
            gflop = GFLOP_PER_FORWARD.get(preset)
            raw = max(raw_forward_rate(model, batch, repeats) for batch in batches)
            share = (f"{100 * raw * gflop / 1e3 / peak:.1f}% of the {peak} TFLOP/s dense data-sheet peak"
                     if gflop and peak and dtype != "float32" else "")
            rows.add("throughput", f"{preset} raw batched forward, {dtype}", round(raw, 1), "images/s",
                     f"best of batch sizes {batches}, median of {repeats}; {share}".strip("; "))
            shared_images = max(batches) // candidates
            shared = shared_forward_rate(model, shared_images, candidates, repeats)
            rows.add("throughput", f"{preset} GPU work of the pipeline alone, {dtype}", round(shared, 1),
                     "region embeddings/s", f"{shared_images} images x {candidates} regions on the device, image "
                     f"shared below the last 4 layers; {shared / raw:.2f}x the raw forward's images/s")
            grid = [(b, w) for b in batches for w in workers] if (preset == presets[0] and position == 0) else \
                [(max(batches), max(workers))]
            pipeline_rate(model, split, grid[0][0], grid[0][1], work / "warmup.jsonl")  # kernels, workers, caches
            for batch, num_workers in grid:
                rate = pipeline_rate(model, split, batch, num_workers, work / f"pred-{preset}-{dtype}.jsonl")
                if preset == presets[0]:  # ViT-B/16 (tiny with --quick): the rate the plan uses
                    best = max(best, rate)
                rows.add("throughput", f"{preset} REC pipeline, {dtype}, batch {batch}, workers {num_workers}",
                         round(rate, 1), "region embeddings/s",
                         f"{images} COCO-like 640x480 JPEGs x {candidates} candidates; {rate / raw:.2f}x the raw "
                         f"forward's images/s; GPU busy ~{min(100.0, 100 * rate / shared):.0f}% (pipeline rate over "
                         f"the rate of its GPU work alone)")
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return best


def matmul_ceiling(rows: Rows, device: torch.device, quick: bool) -> None:
    """The device's measured dense bfloat16 matrix-product rate (the ceiling the shares above are read against)."""
    size = 256 if quick else 8192
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    (median,) = interleaved_medians([lambda: a @ b], 3 if quick else 10, warmup=3)
    rows.add("ceiling", "dense bfloat16 matrix product", round(2 * size ** 3 / median / 1e12, 1), "TFLOP/s",
             f"{size}^3 on random data, median of 10 after 3 warm-ups")


class Budget:
    """Wall seconds since the start; sections past ``limit`` are skipped with a recorded row."""

    def __init__(self, rows: Rows, limit: float):
        self.rows, self.limit, self.started = rows, limit, time.perf_counter()

    def spent(self, what: str) -> bool:
        elapsed = time.perf_counter() - self.started
        if elapsed <= self.limit:
            return False
        self.rows.add("skipped", what, round(elapsed), "s", f"past --budget-s {self.limit:.0f}")
        return True


def plan(rows: Rows, rate: float) -> None:
    """Expected time of each paper table at ``rate`` region embeddings/s (the best ViT-B/16 pipeline rate)."""
    rec_prompts, cls_prompts, pc_prompts = 8, 6, 2
    rec_regions = sum(images * COCO_CANDIDATES_PER_IMAGE for images, _ in REC_SPLITS.values()) * rec_prompts
    cls_regions = sum(CLS_SAMPLES.values()) * cls_prompts
    pc_regions = sum(PC_SHAPES.values()) * 6 * pc_prompts
    for table, regions, how in [
            ("REC table (8 splits, rec_paper prompts)", rec_regions,
             f"~{sum(i for i, _ in REC_SPLITS.values())} images (estimate) x ~{COCO_CANDIDATES_PER_IMAGE} candidates (estimate) "
             f"x {rec_prompts} prompts"),
            ("classification table (4 datasets)", cls_regions, f"{sum(CLS_SAMPLES.values())} samples x {cls_prompts} prompts"),
            ("point-cloud table (2 datasets)", pc_regions, f"{sum(PC_SHAPES.values())} shapes x 6 views x {pc_prompts} prompts")]:
        rows.add("plan", f"{table}: expected minutes", round(regions / rate / 60, 2) if rate else "n/a", "min",
                 f"{int(regions)} region embeddings at {rate:.0f}/s; {how}; image decoding may dominate on few cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="results/benchmarks/gpu.csv")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU test of the script itself)")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="wall seconds after which the remaining sections are skipped (recorded as skipped)")
    parser.add_argument("--sections", nargs="+",
                        default=["ceiling", "correctness", "throughput", "picks", "precision", "plan"])
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: --device cuda but this machine has no CUDA device (use --device cpu --quick to test)")
    dtypes = ["bfloat16"] if device.type == "cpu" else ["float16", "bfloat16"]
    rows = Rows(device_columns(device), args.out)
    budget = Budget(rows, args.budget_s)
    work = Path(tempfile.mkdtemp(prefix="falip-gpu-bench-"))
    sections = {
        "ceiling": lambda: matmul_ceiling(rows, device, args.quick),
        "correctness": lambda: correctness(rows, device, args.quick),
        "throughput": lambda: throughput(rows, device, dtypes, args.quick, work, budget),
        "picks": lambda: None if budget.spent("REC pick changes") else pick_changes(rows, device, dtypes, args.quick),
        "precision": lambda: sandbox_precision(rows, device, dtypes, args.quick, work, budget),
    }
    rate = 0.0
    failed = []
    for name, measure in sections.items():
        if name not in args.sections:
            continue
        try:
            result = measure()
        except Exception as error:  # one broken section must not cost the others' measurements
            if args.quick:
                raise
            failed.append(name)
            rows.add("error", name, type(error).__name__, "", str(error).splitlines()[0][:300] if str(error) else "")
            continue
        if name == "throughput":
            rate = result
    if "plan" in args.sections:
        plan(rows, rate)
    print("wrote", args.out)
    if failed:
        sys.exit(f"bench_gpu: sections failed: {failed} (their error rows are in {args.out})")


if __name__ == "__main__":
    main()
