#!/usr/bin/env python
"""Train the sandbox CLIP on CPU, save it as a HF model directory, and write its model card.

Default (RECIPE): two stages, seed 0: 2,500 steps of 128 scenes (26-33 min on 2 CPU cores), then 1,000
steps of 16 posed 3D shapes x 6 depth maps with 32 scenes per step held to stage 1's (14-17 min),
into
falip/sandbox/model/ (config.json, model.safetensors, tokenizer, preprocessor_config.json,
training_log.json, eval_results.json, loss_curve.png, MODEL_CARD.md). The evaluation uses held-out
seeds and the project's own REC / classification / point-cloud code.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from falip.model.clip import FoveatedCLIP
from falip.prompts import CROP, ORIGINAL_CLIP, FovealBias, VisualPrompt
from falip.sandbox.evaluation import (classification_accuracy, pointcloud_accuracy, rec_accuracy,
                                      scene_classification_split, scene_rec_split, shapes_3d_split)
from falip.sandbox.scenes import CLASS_NAMES, COLOURS, SHAPES
from falip.sandbox.training import TRAIN_TEMPLATES, VOCABULARY, TrainConfig, train_sandbox_clip

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "falip" / "sandbox" / "model"
# --family siglip: the attention-pooled sandbox model (one stage, scenes only; no point clouds)
DEFAULT_SIGLIP_OUT = DEFAULT_OUT.parent / "model_siglip"
# The shipped recipe (what `make train-sandbox` runs): stage 1 = scenes only, 2,500 steps; stage 2 =
# 1,000 steps teaching depth maps with the scenes' hidden states, image embeddings and class scores held.
RECIPE = {"pointcloud_batch": 0, "depth_words_steps": 1000, "depth_warmup_steps": 50,
          "depth_distill_embedding_weight": 100.0, "depth_distill_class_weight": 10.0}
EVAL_SEED = 777_000  # held out: training draws from seed 0's stream
ALPHAS = (0.2, 1.0, 4.0, 8.0, 16.0, 32.0)
ALPHAS_3D = (0.2, 0.5, 1.0, 2.0, 4.0, 16.0)
KIND_LABELS = {"cls": "[CLS] row", "all-rows": "all rows", "patch-rows": "patch rows (encoder only)"}
LAYER_SETS = {"all 4": None, "last 2": (-2, -1), "last 1": (-1,)}


def formulations(model: FoveatedCLIP) -> tuple[tuple[str, str], ...]:
    """The sweep's bias placements: the pooled row, every row; for an attention-pooled tower also the
    encoder's patch rows alone (its pooled row is the head's probe, outside the layers)."""
    kinds = (("cls", "cls"), ("all-rows", "all"))
    return kinds if model.tower.pooled_in_sequence else kinds + (("patch-rows", "patches"),)


def evaluate(model: FoveatedCLIP, scenes: int, with_3d: bool = True) -> dict:
    """Zero-shot single objects, region classification, the REC prompt sweep and (``with_3d``) point clouds."""
    results: dict = {"eval_seed": EVAL_SEED, "scenes_per_set": scenes}
    single = scene_classification_split(scenes, 1, EVAL_SEED)
    results["zero_shot_single_object"] = classification_accuracy(model, [ORIGINAL_CLIP], single)["Original CLIP"]
    rec = scene_rec_split(scenes, 3, EVAL_SEED + 1)
    prompts = [ORIGINAL_CLIP, CROP]
    for label, layers in LAYER_SETS.items():
        for alpha in ALPHAS:
            for kind, formulation in formulations(model):  # the sandbox experiments' cell rule
                bias = FovealBias(alpha=alpha, layers=layers, formulation=formulation, cell_rule="overlap")
                prompts.append(VisualPrompt(f"FALIP {kind} alpha={alpha} layers={label}", bias=bias))
    results["rec_objects3"] = rec_accuracy(model, prompts, rec)
    if not with_3d:
        return results
    shapes = shapes_3d_split(max(10, scenes // 8), EVAL_SEED + 2)  # half of them with clutter
    prompts_3d = [ORIGINAL_CLIP]
    for alpha in ALPHAS_3D:
        for roa in ("boxes", "mask"):
            prompts_3d.append(VisualPrompt(f"FALIP {roa} alpha={alpha}", bias=FovealBias(
                alpha=alpha, layers=None, cell_rule="overlap", roa=roa)))
    results["shapes_3d"] = {"shapes": len(shapes.samples), **pointcloud_accuracy(model, prompts_3d, shapes)}
    return results


def loss_curve(history: list[dict], path: Path) -> None:
    """The contrastive loss per logged step; a second panel for the two-stage recipe's stage 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [[h for h in history if "stage" not in h], [h for h in history if "stage" in h]]
    stages = [entries for entries in stages if entries]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3), dpi=100, squeeze=False)
    for ax, entries in zip(axes[0], stages):
        ax.plot([h["step"] for h in entries], [h["loss"] for h in entries], label="loss")
        if "depth_loss" in entries[0]:
            ax.plot([h["step"] for h in entries], [h["depth_loss"] for h in entries], label="depth-map loss")
            ax.axhline(math.log(6), color="grey", ls=":", label="chance (ln 6)")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("stage 2: depth maps, scenes held" if "stage" in entries[0] else "sandbox CLIP training")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def model_card(log: dict, train: TrainConfig, history, results: dict, size_mb: float) -> str:
    wall_s = log["wall_time_s"]
    rec = results["rec_objects3"]
    siglip = train.family == "siglip"
    kinds = [kind for kind in ("cls", "all-rows", "patch-rows") if any(n.startswith(f"FALIP {kind} ") for n in rec)]
    best = {kind: max(((name, acc) for name, acc in rec.items() if name.startswith(f"FALIP {kind} ")), key=lambda x: x[1])
            for kind in kinds}
    intro = [
        "# Sandbox SigLIP (attention-pooled) — model card", "",
        "A tiny SigLIP-style model trained by this project on procedural scenes (falip/sandbox/scenes.py) with",
        "the sigmoid loss: its image is pooled by an attention-pooling head (a learned probe query, no [CLS]",
        "token), so FALIP's foveal row goes on the probe's attention logits (docs/method.md). Not a",
        "general-purpose model: it knows 5 colours x 4 shapes (no depth maps).", ""] if siglip else [
        "# Sandbox CLIP — model card", "",
        "A tiny CLIP trained by this project on procedural scenes (falip/sandbox/scenes.py) and on PointCLIP",
        "depth maps of posed 3D shapes (falip/sandbox/shapes3d.py), so that FALIP can be run and checked",
        "offline. Not a general-purpose model: it knows 5 colours x 4 shapes, and 6 solids as depth maps.", ""]
    lines = [
        *intro,
        "## Training", "",
        f"- command: `{log.get('command', 'not recorded')}`",
        f"- seed {train.seed}; {train.steps} steps x batch {train.batch_size}; AdamW lr {train.lr} "
        f"(warmup {train.warmup_steps}, cosine), weight decay {train.weight_decay}",
        f"- data: scenes of 1-{train.max_objects} objects on canvases of {train.canvas_min}-{train.canvas_max} px a side, "
        "squashed to 64 px, each captioned by one of its objects through a random template; soft targets "
        "(image i, caption j) positive whenever scene i contains the object caption j names"
        + ("" if not train.pointcloud_batch else
           f"; plus {train.pointcloud_batch} depth maps per batch from step {train.pointcloud_from_step} on (one random "
           f"PointCLIP view of a random posed shape of {train.pointcloud_points} points, up to "
           f"{train.pointcloud_max_clutter:.0%} clutter) captioned 'point cloud depth map of a {{shape}}.', positives by shape")
        + ("" if not train.depth_words_steps else
           f"; then (two-stage recipe; stage 1 used the scene vocabulary only) {train.depth_words_steps} steps of "
           f"{train.depth_words_batch} posed shapes x 6 PointCLIP views classified among the 6 captions 'point cloud "
           f"depth map of a {{shape}}.' (vision tower lr {train.depth_vision_lr}, the new words' embeddings lr "
           f"{train.depth_words_lr}, everything else frozen), {train.depth_distill_scenes} scenes per step held to the "
           f"stage-1 vision hidden states (weight {train.depth_distill_weight})"
           + ("" if not train.depth_distill_embedding_weight else
              f" and their image embeddings, plain and under FALIP on one object, to stage 1's (weight "
              f"{train.depth_distill_embedding_weight} on mean(1 - cos))")
           + ("" if not train.depth_distill_class_weight else
              f" and those embeddings' softmax over the 20 scene classes to stage 1's (weight "
              f"{train.depth_distill_class_weight} on the KL)")
           + (f"; stage-2 warmup {train.depth_warmup_steps} steps" if train.depth_warmup_steps else "")),
        (f"- architecture: ViT {train.vision_layers} layers x {train.vision_width}, patch 8, 64 px (8x8 tokens, no "
         f"[CLS]) + an attention-pooling head (a probe, 4 heads); text {train.text_layers} layers x {train.text_width}, "
         f"padded to 16 tokens, last-token pooling; sigmoid loss with a learned bias" if siglip else
         f"- architecture: ViT {train.vision_layers} layers x {train.vision_width}, patch 8, 64 px (8x8 tokens + [CLS]); "
         f"text {train.text_layers} layers x {train.text_width}; projection {train.projection_dim}"),
        f"- wall time {wall_s / 60:.1f} min on {platform.machine()} with {train.threads} torch threads "
        f"({log.get('machine_note', 'machine not recorded')})"
        + ("" if "stage1_from" not in log else
           f" for stage 2; stage 1 was loaded from {log['stage1_from']} (its own training: "
           f"{log['stage1_wall_time_s'] / 60:.1f} min, {log['stage1_machine_note']})")
        + f"; final loss {history[-1]['loss']:.3f}; weights {size_mb:.1f} MB",
        "- loss curve: `loss_curve.png`; every logged step: `training_log.json`", "",
        "## Vocabulary", "",
        f"Word-level tokenizer (`tokenizer.json`): [PAD] [UNK] [BOS] [EOS] + {' '.join(VOCABULARY)}.",
        f"Training templates: {', '.join(repr(t) for t in TRAIN_TEMPLATES)}.", "",
        f"## Measured (held-out scenes, seed {results['eval_seed']}, {results['scenes_per_set']} scenes per set, 96x80 canvases)", "",
        f"- zero-shot classification of single-object scenes, 20 classes ({', '.join(CLASS_NAMES[:3])}, ...): "
        f"**{results['zero_shot_single_object']:.1f}%** (chance 5%)",
        "- REC on 3-object scenes (every object referred to by its expression, gold boxes, squash):", "",
        "| prompt | accuracy % |", "|---|---|",
        f"| Original CLIP (no prompt) | {rec['Original CLIP']:.1f} |",
        f"| Crop | {rec['Crop']:.1f} |",
        *[f"| best FALIP {KIND_LABELS[kind] if not (siglip and kind == 'cls') else 'probe row (pooling head)'}: "
          f"{best[kind][0][len(f'FALIP {kind} '):]} | {best[kind][1]:.1f} |" for kind in kinds], "",
        "Sweep (alpha x biased layers), REC accuracy % on the same scenes:", "",
        "| layers | formulation | " + " | ".join(f"alpha {a}" for a in ALPHAS) + " |",
        "|---|---|" + "---|" * len(ALPHAS),
    ]
    for label in LAYER_SETS:
        for kind in kinds:
            cells = " | ".join(f"{rec[f'FALIP {kind} alpha={a} layers={label}']:.1f}" for a in ALPHAS)
            lines.append(f"| {label} | {kind} | {cells} |")
    if "shapes_3d" in results:
        pc = results["shapes_3d"]
        lines += ["", f"Point clouds: PointCLIP zero-shot (6 depth maps, equal view weights) on {pc['shapes']} held-out "
                  "posed 3D shapes (6 classes, chance 16.7 %; half with 5-30 % clutter points), all 4 layers biased:", "",
                  "| prompt | " + " | ".join(f"alpha {a}" for a in ALPHAS_3D) + " |", "|---|" + "---|" * len(ALPHAS_3D),
                  f"| Original CLIP | {pc['Original CLIP']:.1f} |" + " |" * (len(ALPHAS_3D) - 1)]
        for roa, label in (("boxes", "FALIP, foreground box"), ("mask", "FALIP, foreground tokens")):
            lines.append(f"| {label} | " + " | ".join(f"{pc[f'FALIP {roa} alpha={a}']:.1f}" for a in ALPHAS_3D) + " |")
    lines += ["", "The sandbox experiments (`falip-run experiment=shapes_*`) use the settings chosen from this sweep;",
              "see docs/sandbox.md. All numbers above were produced by the command at the top."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--pointcloud-batch", type=int, default=RECIPE['pointcloud_batch'],
                        help="depth maps of 3D shapes added to each batch (0: scenes only)")
    parser.add_argument("--pointcloud-from-step", type=int, default=TrainConfig.pointcloud_from_step,
                        help="the depth maps join the batches from this step on (before it: scenes only)")
    parser.add_argument("--pointcloud-loss-weight", type=float, default=TrainConfig.pointcloud_loss_weight,
                        help="give the depth maps their own softmax, weighted by this against the scenes' "
                             "(default: one softmax over scenes and depth maps together)")
    parser.add_argument("--depth-words-steps", type=int, default=RECIPE['depth_words_steps'],
                        help="> 0: the two-stage recipe (scenes alone, then this many steps teaching depth maps "
                             "with the scene behaviour held; needs --pointcloud-batch 0)")
    parser.add_argument("--depth-distill-embedding-weight", type=float, default=RECIPE['depth_distill_embedding_weight'],
                        help="two-stage recipe: also hold the scenes' image embeddings, plain and under FALIP, "
                             "to stage 1's with this weight on mean(1 - cos)")
    parser.add_argument("--depth-distill-class-weight", type=float, default=RECIPE['depth_distill_class_weight'],
                        help="two-stage recipe: also hold those embeddings' softmax over the 20 scene classes "
                             "to stage 1's with this weight on the KL divergence")
    parser.add_argument("--depth-distill-scenes", type=int, default=TrainConfig.depth_distill_scenes,
                        help="two-stage recipe: fresh scenes per stage-2 step held to stage 1's")
    parser.add_argument("--depth-vision-lr", type=float, default=TrainConfig.depth_vision_lr,
                        help="two-stage recipe: the vision tower's learning rate in stage 2")
    parser.add_argument("--depth-warmup-steps", type=int, default=RECIPE['depth_warmup_steps'],
                        help="two-stage recipe: linear learning-rate warmup of stage 2")
    parser.add_argument("--stage1-out", type=Path, help="two-stage recipe: also save the stage-1 (scenes-only) model here")
    parser.add_argument("--stage1-from", type=Path,
                        help="two-stage recipe: load the stage-1 model from here instead of training it")
    parser.add_argument("--family", choices=("clip", "siglip"), default="clip",
                        help="siglip: the attention-pooled sandbox model (scenes only, one stage; default --out "
                             "falip/sandbox/model_siglip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--eval-scenes", type=int, default=400, help="held-out scenes per evaluation set")
    parser.add_argument("--no-eval", action="store_true", help="only train and save")
    parser.add_argument("--eval-only", action="store_true",
                        help="skip training: evaluate the model in --out and rewrite its card")
    parser.add_argument("--machine-note", default="machine not shared", help="recorded in the card")
    args = parser.parse_args()
    if args.family == "siglip":  # scenes only: no depth maps, one stage
        args.pointcloud_batch, args.depth_words_steps = 0, 0
        args.out = DEFAULT_SIGLIP_OUT if args.out == DEFAULT_OUT else args.out

    if args.eval_only:
        log = json.loads((args.out / "training_log.json").read_text())
        train, history = TrainConfig(**log["config"]), log["history"]
        wall = log["wall_time_s"]
    else:
        train = TrainConfig(steps=args.steps, batch_size=args.batch_size, pointcloud_batch=args.pointcloud_batch, pointcloud_from_step=args.pointcloud_from_step,
                            pointcloud_loss_weight=args.pointcloud_loss_weight,
                            depth_words_steps=args.depth_words_steps,
                            depth_distill_embedding_weight=args.depth_distill_embedding_weight,
                            depth_distill_class_weight=args.depth_distill_class_weight,
                            depth_vision_lr=args.depth_vision_lr, depth_distill_scenes=args.depth_distill_scenes, depth_warmup_steps=args.depth_warmup_steps, seed=args.seed, threads=args.threads,
                            family=args.family)
        started = time.perf_counter()
        _, _, history = train_sandbox_clip(train, args.out, stage1_from=args.stage1_from, stage1_out=args.stage1_out)
        wall = time.perf_counter() - started
        log = json.loads((args.out / "training_log.json").read_text())
        log.update({"command": shlex.join(["python", "scripts/train_sandbox_clip.py", *sys.argv[1:]]),
                    "wall_time_s": round(wall, 1), "machine_note": args.machine_note})
        if args.stage1_from:
            stage1 = json.loads((args.stage1_from / "training_log.json").read_text())
            log.update({"stage1_from": str(args.stage1_from), "stage1_wall_time_s": stage1.get("wall_time_s"),
                        "stage1_machine_note": stage1.get("machine_note", "machine not recorded")})
        (args.out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    size_mb = sum(p.stat().st_size for p in args.out.iterdir()) / 1e6
    stages = f"stage 2 ({train.depth_words_steps} steps; stage 1 loaded)" if log.get("stage1_from") else (
        f"{train.steps} steps" + (f" + {train.depth_words_steps} stage-2 steps" if train.depth_words_steps else ""))
    print(f"trained {stages} in {wall / 60:.1f} min -> {args.out} ({size_mb:.1f} MB)")
    loss_curve(history, args.out / "loss_curve.png")
    if args.no_eval:
        return
    model = FoveatedCLIP.from_pretrained(args.out)
    with torch.inference_mode():
        results = evaluate(model, args.eval_scenes, with_3d=train.family == "clip")
    results.update({"train_wall_time_s": round(wall, 1), "machine_note": log.get("machine_note", args.machine_note)})
    (args.out / "eval_results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "MODEL_CARD.md").write_text(model_card(log, train, history, results, size_mb))
    print((args.out / "MODEL_CARD.md").read_text())


if __name__ == "__main__":
    main()
