"""Text embeddings cached per run: each distinct text is encoded once, whatever the prompts and splits."""
from __future__ import annotations

from typing import Sequence

import torch

from ..model.clip import FoveatedCLIP


class TextCache:
    """Normalised text embeddings on the CPU (float32), keyed by the exact text."""

    def __init__(self, model: FoveatedCLIP, batch_size: int = 256):
        self.model, self.batch_size = model, batch_size
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
            embeddings = self.model.encode_text(new, batch_size=self.batch_size).float().cpu()
            self._cache.update(zip(new, embeddings))
        if not texts:
            return torch.empty(0, 0)
        return torch.stack([self._cache[text] for text in texts])

    def classifier(self, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """Zero-shot weights ``(C, D)``: per class, the renormalised mean of its templated embeddings."""
        if not templates:
            raise ValueError("at least one text template is needed")
        rows = []
        for name in class_names:
            mean = self.embed([template.format(name) for template in templates]).mean(0)
            rows.append(mean / mean.norm())
        return torch.stack(rows)
