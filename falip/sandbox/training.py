"""Train the sandbox CLIP: a tiny HF ``CLIPModel`` learned contrastively on freshly generated scenes
and PointCLIP depth maps of procedural 3D shapes.

Each training image is a scene of 1-3 objects on a random canvas (64-112 px a side, so aspect and
resizing vary as in evaluation), squashed to the 64 px input by the same preprocessing the
evaluation uses, and captioned by ONE of its objects through a random template. Targets are soft:
image i and caption j are a positive pair whenever scene i contains the object caption j names
(so identical captions in a batch share the target mass). Each batch also holds
``pointcloud_batch`` depth maps (one random PointCLIP view of a random posed 3D shape,
:mod:`falip.sandbox.shapes3d`) captioned "point cloud depth map of a {shape}.", positives by shape. The result is saved as a complete HF
model directory that ``FoveatedCLIP.from_pretrained`` loads like any checkpoint.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

from ..geometry import Region, resize_geometry
from ..model.clip import FoveatedCLIP
from ..prompts.prompt import FovealBias
from ..model.preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocessor
from ..data.pointcloud.projection import depth_maps, model_inputs
from .scenes import CLASS_NAMES, CLASSES, COLOURS, SHAPES, expression, generate_scene
from .shapes3d import SHAPES_3D, sample_shapes
from ..model.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, build_word_tokenizer

# Caption forms: the REC text ("a photo of " + expression), the classification templates, and plain forms.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of {}", "a photo of a {}.", "a photo of the {}", "a {}.", "a {}", "{}", "this is a {}.", "the {}",
)
# PointCLIP's text template (falip/tasks/pointcloud.py uses the same by default).
POINTCLOUD_TEMPLATE = "point cloud depth map of a {}."
CLASSIFICATION_TEMPLATE = "a photo of a {}."  # the classification experiments' template
SCENE_VOCABULARY: tuple[str, ...] = ("a", "photo", "of", "the", "this", "is", ".", *COLOURS, *SHAPES)
DEPTH_MAP_WORDS: tuple[str, ...] = ("point", "cloud", "depth", "map", *SHAPES_3D)
VOCABULARY: tuple[str, ...] = (*SCENE_VOCABULARY, *DEPTH_MAP_WORDS)
INPUT_SIZE, PATCH_SIZE = 64, 8


@dataclass
class TrainConfig:
    steps: int = 2500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    threads: int = 2
    max_objects: int = 3
    canvas_min: int = 64
    canvas_max: int = 112
    vision_layers: int = 4
    vision_width: int = 128
    text_layers: int = 2
    text_width: int = 128
    projection_dim: int = 128
    log_every: int = 25
    targets: str = "contains"   # "contains": (i, j) positive if scene i contains caption j's object;
                                # "same_object": if captions i and j name the same object
    pointcloud_batch: int = 32  # PointCLIP depth maps (one random view of a random 3D shape) added to each batch
    pointcloud_from_step: int = 0  # depth maps join the batches from this step on (before: scenes only)
    pointcloud_loss_weight: float | None = None  # None: scenes and depth maps share one softmax (block-diagonal
                                                 # positives); w: each has its own, loss = scenes + w * depth maps
    pointcloud_points: int = 1024
    depth_words_steps: int = 0  # > 0: the two-stage recipe (scenes alone with the scene vocabulary, then this
                                # many steps teaching depth maps to the vision tower and the new words' embeddings)
    depth_words_batch: int = 16  # shapes per stage-2 step (all 6 views of each)
    depth_words_lr: float = 1e-2  # stage 2: the depth-map words' embeddings
    depth_vision_lr: float = 1e-3  # stage 2: the vision tower
    depth_distill_scenes: int = 32  # stage 2: scenes per step whose vision hidden states are held to stage 1's
    depth_distill_weight: float = 1.0
    depth_warmup_steps: int = 0  # stage 2: linear learning-rate warmup
    depth_distill_embedding_weight: float = 0.0  # stage 2: x mean(1 - cos) of the scenes' image embeddings (plain
                                                 # and under FALIP's bias on one object) against stage 1's
    depth_distill_alpha: float = 16.0  # stage 2: the FALIP bias (every layer) under which the scenes are held
    depth_distill_class_weight: float = 0.0  # stage 2: x KL of those embeddings' softmax over the 20 scene classes
                                             # ("a photo of a {}.") against stage 1's
    pointcloud_max_clutter: float = 0.2
    family: str = "clip"  # "siglip": an attention-pooled tower (a probe query, no [CLS]) trained with the sigmoid
                          # loss (SigLIP, Zhai et al. 2023), texts padded to the context; scenes only


def sandbox_clip_config(train: TrainConfig, vocabulary: tuple[str, ...] = VOCABULARY) -> CLIPConfig | SiglipConfig:
    text = dict(vocab_size=len(vocabulary) + len(SPECIAL_TOKENS), hidden_size=train.text_width, intermediate_size=4 * train.text_width,
                num_hidden_layers=train.text_layers, num_attention_heads=4, max_position_embeddings=16,
                bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    vision = dict(image_size=INPUT_SIZE, patch_size=PATCH_SIZE, hidden_size=train.vision_width,
                  intermediate_size=4 * train.vision_width, num_hidden_layers=train.vision_layers, num_attention_heads=4)
    if train.family == "siglip":  # image features are the vision width: the text head projects to it
        return SiglipConfig(text_config={**text, "projection_size": train.vision_width}, vision_config=vision)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=train.projection_dim)


def sigmoid_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss: every (image, caption) pair a binary decision, ``-sum log sigmoid(+-logit) / images``."""
    signs = 2 * positives.float() - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def preprocessor() -> ImagePreprocessor:
    return ImagePreprocessor(INPUT_SIZE, PATCH_SIZE, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def make_batch(rng: np.random.Generator, train: TrainConfig, prep: ImagePreprocessor):
    """Pixels (B,3,64,64), captions (B), and the (B,B) positive-pair matrix."""
    images, captions, contents, caption_classes = [], [], [], []
    for _ in range(train.batch_size):
        width, height = (int(v) for v in rng.integers(train.canvas_min, train.canvas_max + 1, size=2))
        scene = generate_scene(rng, int(rng.integers(1, train.max_objects + 1)), width, height)
        target = scene.objects[int(rng.integers(len(scene.objects)))]
        template = TRAIN_TEMPLATES[int(rng.integers(len(TRAIN_TEMPLATES)))]
        images.append(scene.image)
        captions.append(template.format(target.expression))
        contents.append({obj.label for obj in scene.objects})
        caption_classes.append(target.label)
    if train.targets == "contains":
        positives = [[caption_classes[j] in contents[i] for j in range(len(captions))] for i in range(len(images))]
    elif train.targets == "same_object":
        positives = [[caption_classes[j] == caption_classes[i] for j in range(len(captions))] for i in range(len(images))]
    else:
        raise ValueError(f"targets must be 'contains' or 'same_object', got {train.targets!r}")
    positives = torch.tensor(positives, dtype=torch.float32)
    return prep(images, "squash"), captions, positives


def make_region_batch(rng: np.random.Generator, train: TrainConfig, prep: ImagePreprocessor):
    """Pixels (B,3,64,64) of fresh scenes and, per scene, one random object's region (box and mask) in
    model-input pixels."""
    images, regions = [], []
    for _ in range(train.batch_size):
        width, height = (int(v) for v in rng.integers(train.canvas_min, train.canvas_max + 1, size=2))
        scene = generate_scene(rng, int(rng.integers(1, train.max_objects + 1)), width, height)
        target = scene.objects[int(rng.integers(len(scene.objects)))]
        images.append(scene.image)
        geometry = resize_geometry(width, height, INPUT_SIZE, "squash")
        regions.append(geometry.region_to_input(Region((target.box,), target.mask)))
    return prep(images, "squash"), regions


def make_pointcloud_batch(rng: np.random.Generator, train: TrainConfig):
    """Depth-map pixels (P,3,64,64) of one random PointCLIP view per random 3D shape, their captions
    (the PointCLIP template) and labels."""
    clouds, labels = sample_shapes(rng, train.pointcloud_batch, train.pointcloud_points, train.pointcloud_max_clutter)
    maps = depth_maps(torch.from_numpy(clouds))  # (P, 6, 128, 128)
    views = torch.from_numpy(rng.integers(0, maps.shape[1], len(labels)))
    pixels = model_inputs(maps[torch.arange(len(labels)), views][:, None], INPUT_SIZE)
    return pixels, [POINTCLOUD_TEMPLATE.format(SHAPES_3D[int(label)]) for label in labels], labels


def mixed_batch(rng: np.random.Generator, rng_3d: np.random.Generator, train: TrainConfig, prep: ImagePreprocessor):
    """A scene batch plus (``train.pointcloud_batch`` > 0) a depth-map batch: pixels, captions, and the
    block-diagonal positives (a depth map and a scene caption are never a pair; depth maps pair by shape)."""
    pixels, captions, positives = make_batch(rng, train, prep)
    if not train.pointcloud_batch:
        return pixels, captions, positives
    depth, depth_captions, labels = make_pointcloud_batch(rng_3d, train)
    labels = torch.from_numpy(labels)
    same = (labels[:, None] == labels[None, :]).float()
    joint = torch.zeros(len(captions) + len(labels), len(captions) + len(labels))
    joint[:len(captions), :len(captions)] = positives
    joint[len(captions):, len(captions):] = same
    return torch.cat([pixels, depth]), captions + depth_captions, joint


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy both ways; targets spread over every positive of a row / column."""
    image_targets = positives / positives.sum(1, keepdim=True)
    text_targets = positives / positives.sum(0, keepdim=True)
    image_loss = -(image_targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_loss = -(text_targets * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (image_loss + text_loss) / 2


def batch_loss(logits: torch.Tensor, positives: torch.Tensor, scenes: int, train: TrainConfig) -> torch.Tensor:
    """The training loss of a batch whose first ``scenes`` rows/columns are scenes (the rest depth maps)."""
    if train.pointcloud_loss_weight is None or scenes == len(positives):
        return contrastive_loss(logits, positives)
    scene_loss = contrastive_loss(logits[:scenes, :scenes], positives[:scenes, :scenes])
    depth_loss = contrastive_loss(logits[scenes:, scenes:], positives[scenes:, scenes:])
    return scene_loss + train.pointcloud_loss_weight * depth_loss


# Stage 2 starts each 3D shape word as a copy of a scene word's embedding: the frozen text tower has
# learned to read those positions, while a freshly drawn row is ignored by it (every "point cloud
# depth map of a {shape}." then embeds alike). Four look alike in 2D; torus and cylinder take colours.
DEPTH_WORD_STARTS = {"cube": "square", "sphere": "circle", "cone": "triangle", "pyramid": "cross",
                     "torus": "red", "cylinder": "blue"}


def extend_vocabulary(model: CLIPModel, vocabulary: tuple[str, ...], seed: int,
                      starts: dict[str, str] | None = None) -> None:
    """Grow the text tower's token embedding to ``vocabulary`` (which must start with the model's own):
    existing rows are kept bit for bit; a new word in ``starts`` begins as a copy of the named existing
    word's row, any other is drawn like the model's init (seeded)."""
    old = model.text_model.embeddings.token_embedding
    size = len(vocabulary) + len(SPECIAL_TOKENS)
    if size < old.num_embeddings:
        raise ValueError(f"the vocabulary has {size} tokens, the model already {old.num_embeddings}")
    generator = torch.Generator().manual_seed(seed)
    weight = torch.empty(size, old.embedding_dim).normal_(0, model.config.text_config.initializer_range, generator=generator)
    weight[:old.num_embeddings] = old.weight.detach()
    ids = {word: index + len(SPECIAL_TOKENS) for index, word in enumerate(vocabulary)}
    for word, start in (starts or {}).items():
        if ids[word] >= old.num_embeddings:
            weight[ids[word]] = old.weight.detach()[ids[start]]
    new = torch.nn.Embedding(size, old.embedding_dim)
    new.weight.data.copy_(weight)
    model.text_model.embeddings.token_embedding = new
    model.config.text_config.vocab_size = size


def scene_distillation(student: FoveatedCLIP, teacher: FoveatedCLIP, pixels: torch.Tensor, regions: list[Region],
                       falip_bias: FovealBias, class_text: torch.Tensor | None = None,
                       scale: float = 100.0) -> dict[str, torch.Tensor]:
    """How far the student's image embeddings of ``pixels`` are from the teacher's, plain and under
    ``falip_bias`` on each row's region, averaged over the two (differentiable in the student):
    ``"embedding"``: mean(1 - cos); ``"class"`` (with ``class_text``, L2-normalised class caption
    embeddings (C, D)): KL(teacher || student) of the softmax over the classes at logit ``scale``."""
    bias = falip_bias.build(regions, INPUT_SIZE, PATCH_SIZE)
    gaps, divergences = [], []
    for attention_bias in (None, bias):
        with torch.no_grad():
            target = teacher.encode_image(pixels, attention_bias=attention_bias, requires_grad=True)
        ours = student.encode_image(pixels, attention_bias=attention_bias, requires_grad=True)
        gaps.append(1 - (ours * target).sum(-1).mean())
        if class_text is not None:
            divergences.append(F.kl_div(F.log_softmax(scale * ours @ class_text.T, dim=-1),
                                        F.log_softmax(scale * target @ class_text.T, dim=-1),
                                        log_target=True, reduction="batchmean"))
    terms = {"embedding": sum(gaps) / len(gaps)}
    if divergences:
        terms["class"] = sum(divergences) / len(divergences)
    return terms


def learn_depth_maps(model: CLIPModel, tokenizer, train: TrainConfig, first_new_id: int,
                     log: Callable[[str], None] = print) -> list[dict]:
    """Stage 2 of the two-stage recipe: teach a scene-trained model PointCLIP depth maps without
    moving its 2D behaviour. Trainable: the vision tower and the embeddings of the tokens from
    ``first_new_id`` on (the depth-map words; scene captions contain none, so every scene caption's
    embedding is unchanged exactly). Loss: each view of a random posed shape classified among the 6
    captions "point cloud depth map of a {shape}." (cross-entropy, the model's logit scale), plus
    ``depth_distill_weight`` x the mean squared difference of every vision layer's hidden states on
    fresh scenes against the stage-1 model's, plus ``depth_distill_embedding_weight`` x mean(1 - cos)
    of those scenes' projected image embeddings, plain and under FALIP's bias on one object
    (``depth_distill_alpha``, every layer), against stage 1's, plus ``depth_distill_class_weight`` x the KL of
    their softmax over the 20 scene classes against stage 1's (:func:`scene_distillation`): what the
    2D tables read stays where it was."""
    rng, rng_3d = np.random.default_rng([train.seed, 2]), np.random.default_rng([train.seed, 3])
    teacher = copy.deepcopy(model).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    vision = [*model.vision_model.parameters(), *model.visual_projection.parameters()]
    for parameter in vision:
        parameter.requires_grad_(True)
    embedding = model.text_model.embeddings.token_embedding.weight
    embedding.requires_grad_(True)
    keep = torch.zeros_like(embedding)
    keep[first_new_id:] = 1.0
    embedding.register_hook(lambda grad: grad * keep)
    optimizer = torch.optim.Adam([{"params": vision, "lr": train.depth_vision_lr},
                                  {"params": [embedding], "lr": train.depth_words_lr}])
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, train.depth_warmup_steps)))
    captions = [POINTCLOUD_TEMPLATE.format(shape) for shape in SHAPES_3D]
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    scale = model.logit_scale.exp().clamp(max=100).detach()
    prep, history, started = preprocessor(), [], time.perf_counter()
    model.eval()  # no dropout in this model; eval keeps it that way
    scene_train = TrainConfig(**{**asdict(train), "batch_size": train.depth_distill_scenes})
    student_view, teacher_view = FoveatedCLIP(model), FoveatedCLIP(teacher)
    falip_bias = FovealBias(alpha=train.depth_distill_alpha, layers=None)
    class_text = None
    if train.depth_distill_class_weight:
        with torch.no_grad():  # scene captions embed exactly as in stage 1 throughout stage 2
            class_tokens = tokenizer([CLASSIFICATION_TEMPLATE.format(name) for name in CLASS_NAMES], padding=True,
                                     return_tensors="pt")
            class_text = F.normalize(teacher.get_text_features(input_ids=class_tokens["input_ids"],
                                                                  attention_mask=class_tokens["attention_mask"]).pooler_output, dim=-1)
    for step in range(train.depth_words_steps):
        clouds, labels = sample_shapes(rng_3d, train.depth_words_batch, train.pointcloud_points, train.pointcloud_max_clutter)
        maps = depth_maps(torch.from_numpy(clouds))
        depth = model_inputs(maps.flatten(0, 1)[:, None], INPUT_SIZE)  # every view of every shape
        targets = torch.from_numpy(labels).repeat_interleave(maps.shape[1])
        scenes, regions = make_region_batch(rng, scene_train, prep)
        with torch.no_grad():
            reference = teacher.vision_model(pixel_values=scenes, output_hidden_states=True).hidden_states
        out = model.vision_model(pixel_values=torch.cat([scenes, depth]), output_hidden_states=True)
        distill = sum(F.mse_loss(h[:len(scenes)], r) for h, r in zip(out.hidden_states, reference)) / len(reference)
        embedding_distill = class_distill = torch.zeros(())
        if train.depth_distill_embedding_weight or train.depth_distill_class_weight:
            terms = scene_distillation(student_view, teacher_view, scenes, regions, falip_bias, class_text, float(scale))
            embedding_distill, class_distill = terms["embedding"], terms.get("class", class_distill)
        image = F.normalize(model.visual_projection(out.pooler_output[len(scenes):]), dim=-1)
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        logits = scale * image @ F.normalize(text, dim=-1).T
        depth_loss = F.cross_entropy(logits, targets)
        loss = (depth_loss + train.depth_distill_weight * distill + train.depth_distill_embedding_weight * embedding_distill
                + train.depth_distill_class_weight * class_distill)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        warmup.step()
        if step % train.log_every == 0 or step == train.depth_words_steps - 1:
            entry = {"stage": "depth maps", "step": step, "loss": round(loss.item(), 5),
                     "depth_loss": round(depth_loss.item(), 5), "distill": round(distill.item(), 6),
                     "embedding_distill": round(embedding_distill.item(), 7),
                     "class_distill": round(class_distill.item(), 7),
                     "depth_accuracy": round((logits.argmax(1) == targets).float().mean().item(), 4),
                     "elapsed_s": round(time.perf_counter() - started, 1)}
            history.append(entry)
            log(json.dumps(entry))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return history


def train_sandbox_clip(train: TrainConfig, out_dir: str | Path | None = None,
                       log: Callable[[str], None] = print, stage1_from: str | Path | None = None,
                       stage1_out: str | Path | None = None) -> tuple[CLIPModel, object, list[dict]]:
    """Train from ``train`` (seeded) and, if ``out_dir`` is given, save the HF model directory there.

    One stage (``depth_words_steps`` = 0): scenes and ``pointcloud_batch`` depth maps per batch,
    jointly. Two stages (``depth_words_steps`` > 0): the scenes alone with the scene vocabulary (saved
    to ``stage1_out`` if given, or loaded from ``stage1_from`` instead of trained), then
    :func:`learn_depth_maps`."""
    torch.set_num_threads(train.threads)
    two_stage = train.depth_words_steps > 0
    if train.family not in ("clip", "siglip"):
        raise ValueError(f"family must be 'clip' or 'siglip', got {train.family!r}")
    if train.family == "siglip" and (two_stage or train.pointcloud_batch):
        raise ValueError("the attention-pooled sandbox model learns scenes only: set depth_words_steps=0 and "
                         "pointcloud_batch=0")
    if two_stage and train.pointcloud_batch:
        raise ValueError("the two-stage recipe (depth_words_steps > 0) learns depth maps in stage 2 only: "
                         "set pointcloud_batch=0")
    vocabulary = SCENE_VOCABULARY if two_stage else VOCABULARY
    if stage1_from is not None:
        model = CLIPModel.from_pretrained(stage1_from, attn_implementation="sdpa").eval()
        history = json.loads((Path(stage1_from) / "training_log.json").read_text())["history"]
    else:
        model, history = _train_on_scenes(train, vocabulary, log)
        if stage1_out is not None:
            save_sandbox_model(model, build_word_tokenizer(vocabulary), stage1_out, train, history)
    tokenizer = build_word_tokenizer(VOCABULARY)
    if two_stage:
        first_new_id = model.text_model.embeddings.token_embedding.num_embeddings
        extend_vocabulary(model, VOCABULARY, train.seed, DEPTH_WORD_STARTS)
        history = history + learn_depth_maps(model, tokenizer, train, first_new_id, log)
    if out_dir is not None:
        save_sandbox_model(model, tokenizer, out_dir, train, history)
    return model, tokenizer, history


def _train_on_scenes(train: TrainConfig, vocabulary: tuple[str, ...], log: Callable[[str], None]):
    """Stage 1 (or the whole one-stage recipe): contrastive training from scratch, seeded."""
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    rng_3d = np.random.default_rng([train.seed, 3])  # its own stream: the scene batches do not depend on it
    tokenizer = build_word_tokenizer(vocabulary)
    siglip = train.family == "siglip"
    model_class = SiglipModel if siglip else CLIPModel
    model = model_class._from_config(sandbox_clip_config(train, vocabulary), attn_implementation="sdpa")
    if siglip:  # the SigLIP paper's initialisation: temperature 10, bias -10
        with torch.no_grad():
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-10.0)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=train.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < train.warmup_steps:
            return train.lr * (step + 1) / train.warmup_steps
        progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
        return train.lr * 0.5 * (1 + math.cos(math.pi * progress))

    prep, history, started = preprocessor(), [], time.perf_counter()
    for step in range(train.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        if step >= train.pointcloud_from_step:
            pixels, captions, positives = mixed_batch(rng, rng_3d, train, prep)
        else:
            pixels, captions, positives = make_batch(rng, train, prep)
        image = model.get_image_features(pixel_values=pixels).pooler_output
        if siglip:  # padded to the context, no mask: as SigLIP trains and as FoveatedCLIP encodes its texts
            tokens = tokenizer(captions, padding="max_length", max_length=16, return_tensors="pt")
            text = model.get_text_features(input_ids=tokens["input_ids"]).pooler_output
        else:
            tokens = tokenizer(captions, padding=True, return_tensors="pt")
            text = model.get_text_features(input_ids=tokens["input_ids"],
                                           attention_mask=tokens["attention_mask"]).pooler_output
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image @ text.T
        if siglip:
            loss = sigmoid_loss(logits + model.logit_bias, positives)
        else:
            loss = batch_loss(logits, positives, train.batch_size, train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % train.log_every == 0 or step == train.steps - 1:
            entry = {"step": step, "loss": round(loss.item(), 5), "lr": lr_at(step),
                     "logit_scale": round(model.logit_scale.detach().exp().item(), 3),
                     **({"logit_bias": round(model.logit_bias.item(), 3)} if siglip else {}),
                     "elapsed_s": round(time.perf_counter() - started, 1)}
            history.append(entry)
            log(json.dumps(entry))
    model.eval()
    return model, history


# The shipped model's foveal alpha, chosen on held-out scenes (MODEL_CARD.md's sweep), saved in its
# config.json so that the Python API uses it; configs/model/sandbox.yaml states the same value.
SANDBOX_FOVEAL_ALPHA = 8.0


def save_sandbox_model(model: CLIPModel, tokenizer, out_dir: str | Path, train: TrainConfig, history: list[dict],
                       foveal_alpha: float = SANDBOX_FOVEAL_ALPHA) -> Path:
    """A complete HF directory: config (with the model's ``foveal_alpha``), safetensors weights, tokenizer,
    preprocessor config, training log."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.foveal_alpha = float(foveal_alpha)  # read back by FoveatedCLIP.foveal_alpha
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": INPUT_SIZE},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": INPUT_SIZE, "width": INPUT_SIZE},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD), "do_convert_rgb": True}, indent=2) + "\n")
    (out_dir / "training_log.json").write_text(json.dumps({"config": asdict(train), "history": history}, indent=1) + "\n")
    return out_dir


def vocabulary_covers(texts: list[str]) -> list[str]:
    """The words of ``texts`` the sandbox tokenizer does not know (empty = all covered)."""
    tokenizer = build_word_tokenizer(VOCABULARY)
    unknown = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        if tokenizer.unk_token_id in ids:
            unknown.append(text)
    return unknown


__all__ = ["TrainConfig", "POINTCLOUD_TEMPLATE", "mixed_batch", "batch_loss", "train_sandbox_clip", "save_sandbox_model", "sandbox_clip_config", "VOCABULARY",
           "TRAIN_TEMPLATES", "CLASSIFICATION_TEMPLATE", "CLASSES", "expression"]
