"""Text embeddings cached per run: each distinct text is encoded once, whatever the prompts and splits."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch

from ..io import atomic_write
from ..model.clip import FoveatedCLIP


class TextCache:
    """Normalised text embeddings on the CPU (float32), keyed by the exact text.

    With ``disk_cache`` (a folder) and ``model_key`` (what identifies the model's weights, e.g. their
    sha256), zero-shot classifiers are also kept on disk, one file per (model, class list, template
    set): ImageNet-S919 x 80 templates is 73,520 texts, encoded once per model, not once per run.
    """

    def __init__(self, model: FoveatedCLIP, batch_size: int = 256, disk_cache: str | Path | None = None,
                 model_key: str | None = None):
        self.model, self.batch_size = model, batch_size
        self.disk_cache = Path(disk_cache) if disk_cache is not None and model_key else None
        self.model_key = model_key
        self.classifiers_from_disk = 0
        self.truncated: list[str] = []  # distinct texts longer than the text encoder's context (cut to it)
        self.unknown: list[str] = []  # distinct texts with words the tokenizer does not know ([UNK])
        self.unknown_tokens = self.tokens = 0  # over the distinct texts encoded
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def num_encoded(self) -> int:
        """How many distinct texts went through the text encoder."""
        return len(self._cache)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), D)`` embeddings; only texts not seen before are encoded."""
        new = list(dict.fromkeys(text for text in texts if text not in self._cache))
        if new:
            context = self.model.text_context
            counts = self.model.unknown_token_counts(new)  # (unknown tokens, tokens) per text: one tokenization
            self.truncated.extend(text for text, (_, total) in zip(new, counts) if total > context)
            self.unknown.extend(text for text, (unknown, _) in zip(new, counts) if unknown)
            self.unknown_tokens += sum(unknown for unknown, _ in counts)
            self.tokens += sum(total for _, total in counts)
            embeddings = self.model.encode_text(new, batch_size=self.batch_size, warn_unknown=False).float().cpu()
            self._cache.update(zip(new, embeddings))
        if not texts:
            return torch.empty(0, 0)
        return torch.stack([self._cache[text] for text in texts])

    def classifier(self, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """Zero-shot weights ``(C, D)``: per class, the renormalised mean of its templated embeddings."""
        if not templates:
            raise ValueError("at least one text template is needed")
        path = None
        if self.disk_cache is not None:
            key = hashlib.sha256(json.dumps([self.model_key, list(class_names), list(templates)]).encode()).hexdigest()
            path = self.disk_cache / f"{key[:32]}.pt"
            if path.is_file():
                self.classifiers_from_disk += 1
                return torch.load(path, map_location="cpu", weights_only=True)
        rows = []
        for name in class_names:
            mean = self.embed([template.format(name) for template in templates]).mean(0)
            rows.append(mean / mean.norm())
        weights = torch.stack(rows)
        if path is not None:
            atomic_write(path, lambda tmp: torch.save(weights, tmp))
        return weights
