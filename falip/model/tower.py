"""The vision-tower contract: what the rest of the package may know about a backbone.

A :class:`VisionTower` is a ViT seen as a sequence of steps the steering code drives one at a time:

* ``embed(pixels)`` -- patch embedding (+ position embedding, pre-norm): ``(B, T, D)`` hidden states;
* ``layer(i, hidden, mask)`` -- encoder layer ``i`` with an additive attention ``mask`` (or none);
* ``layer_rows(i, hidden, mask, rows, index)`` -- the same layer for some query rows only (the exact
  trims: keys and values from every token, queries from ``rows``);
* ``pooled_stream_layer(...)`` -- the approximate ``cls_stream`` step (opt-in, never a default);
* ``readout(hidden)`` -- pooling of :attr:`pooled_rows` + projection: unnormalised image features;
* ``library_features(pixels)`` -- the library's own image features: what an unsteered call returns, bit
  for bit.

Geometry: :attr:`pooled_rows` (the query rows the readout reads: ``[CLS]``, row 0, for CLIP),
:attr:`patch_rows` (where the patch tokens sit), the patch grid and the layer/head sizes.

Inside attention, named **hook sites** (TransformerLens' hook points, open_clip's ``q_x/k_x/v_x``) per
layer: ``q``, ``k``, ``v`` (projections, ``(B, T, H*d)``), ``z`` (the heads' outputs side by side, the
output projection's input, ``(B, T, H*d)``) and ``resid_pre`` (the layer's input, ``(B, T, D)``). A
hook ``fn(tensor) -> tensor | None`` reads a site (returns ``None``) or replaces it (returns a tensor);
:func:`hooked` installs hooks for one block and always removes them. :meth:`head_terms` splits the
pooled row's attention update into per-head terms (the output projection is the tower's business).

Nothing outside a tower module knows a backbone's module names or that ``[CLS]`` is row 0
(``tests/test_architecture.py`` checks it). HF CLIP is :class:`falip.model.hf_clip.HFCLIPTower`.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

SITES = ("q", "k", "v", "z", "resid_pre")
Hook = Callable[[torch.Tensor], "torch.Tensor | None"]


class VisionTower(nn.Module, ABC):
    """The contract every backbone's vision side fulfils (see the module docstring)."""

    image_size: int
    patch_size: int
    num_layers: int
    num_heads: int
    head_dim: int
    pooled_rows: slice
    patch_rows: slice

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens of the sequence: the patches plus the rows before them (``[CLS]`` for CLIP)."""
        return self.grid_size ** 2 + (self.patch_rows.start or 0)

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (the weights')."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    @abstractmethod
    def attn_implementation(self) -> str:
        """How the layers compute attention (an additive mask needs ``eager`` or ``sdpa``)."""

    @abstractmethod
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` pixels -> ``(B, T, D)`` hidden states entering layer 0."""

    @abstractmethod
    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Layer ``index`` on ``(B, T, D)`` with the additive ``mask`` ``(B or 1, 1 or H, T, T)`` (or none)."""

    @abstractmethod
    def layer_rows(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None, rows: slice,
                   image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Layer ``index``'s output at query ``rows`` only, keys and values from every token of ``hidden``
        ``(I, T, D)``; with ``image_index`` ``(R,)`` output row ``r`` reads image ``image_index[r]`` and
        mask row ``r``. Hooks at the layer's sites are not run (a trimmed layer is never hooked)."""

    @abstractmethod
    def pooled_stream_layer(self, index: int, image_hidden: torch.Tensor, pooled: torch.Tensor,
                            mask: torch.Tensor | None, image_index: torch.Tensor) -> torch.Tensor:
        """**Approximate** (``cls_stream``): layer ``index`` for per-region pooled rows ``(R, P, D)`` only,
        attending to themselves and to their image's unbiased patch rows of ``image_hidden`` ``(I, T, D)``."""

    @abstractmethod
    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, T', D)`` last hidden states (``T'`` >= the pooled rows) -> ``(B, E)`` projected features."""

    @abstractmethod
    def library_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, E)`` unnormalised image features exactly as the backbone's own library computes them."""

    @abstractmethod
    def head_terms(self, index: int, z_pooled: torch.Tensor) -> torch.Tensor:
        """``(B, H, D)``: each head's term of layer ``index``'s attention update of the pooled row, from its
        ``z`` site row ``(B, H*d)`` (summed over heads plus :meth:`head_bias` = the update)."""

    @abstractmethod
    def head_bias(self, index: int) -> torch.Tensor:
        """The bias the output projection of layer ``index`` adds to every row (``(D,)``, zeros if none)."""

    def attention_scale(self, index: int) -> float:
        """The factor of ``q k^T`` in layer ``index`` (``head_dim ** -0.5`` unless the tower says otherwise)."""
        return self.head_dim ** -0.5

    @abstractmethod
    def add_hook(self, index: int, site: str, fn: Hook, first: bool = False) -> Callable[[], None]:
        """Install ``fn`` at ``site`` of layer ``index``; returns the function that removes it. Hooks at a site
        run in the order they were added, except ``first`` ones, which run before all others: interventions
        are added first, so that a reader (``capture``) sees the tensor the layer really used."""


def check_site(site: str) -> None:
    if site not in SITES:
        raise ValueError(f"unknown hook site {site!r}; sites: {list(SITES)}")


@contextlib.contextmanager
def hooked(tower: VisionTower, hooks: Sequence[tuple[int, str, Hook]], first: bool = False) -> Iterator[None]:
    """Install ``(layer, site, fn)`` hooks on ``tower`` for the block (``first``: before the hooks already
    there, in the given order), always removing them."""
    removers = []
    try:
        for index, site, fn in (reversed(hooks) if first else hooks):
            removers.append(tower.add_hook(index, site, fn, first=first))
        yield
    finally:
        for remove in reversed(removers):
            remove()


@contextlib.contextmanager
def capture(tower: VisionTower, layers: Sequence[int],
            sites: Sequence[str]) -> Iterator[dict[tuple[int, str], torch.Tensor]]:
    """Record, for each layer in ``layers``, the tensors at ``sites`` (``{(layer, site): tensor}``)."""
    store: dict[tuple[int, str], torch.Tensor] = {}

    def recorder(key):
        def record(tensor: torch.Tensor) -> None:
            store[key] = tensor
        return record

    with hooked(tower, [(index, site, recorder((index, site))) for index in layers for site in sites]):
        yield store  # readers run after any intervention (added first): they record what the layer used
