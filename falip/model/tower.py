"""The vision-tower contract: what the rest of the package may know about a backbone.

A :class:`VisionTower` is a ViT seen as a sequence of steps the steering code drives one at a time:

* ``embed(pixels)`` -- patch embedding (+ position embedding, pre-norm): ``(B, T, D)`` hidden states;
* ``layer(i, hidden, mask)`` -- encoder layer ``i`` with an additive attention ``mask`` (or none);
* ``layer_rows(i, hidden, mask, rows, index)`` -- the same layer for some query rows only (the exact
  trims: keys and values from every token, queries from ``rows``);
* ``pooled_stream_layer(...)`` -- the approximate ``cls_stream`` step (opt-in, never a default);
* ``readout(hidden, mask, image_index)`` -- pooling + projection: unnormalised image features;
* ``library_features(pixels)`` -- the library's own image features: what an unsteered call returns, bit
  for bit.

Geometry, in the **steering layout** every bias and ROA mask uses -- the pooled query row(s) first, then the
patch tokens row by row: :attr:`pooled_rows` (the query rows that pool the image) and :attr:`patch_rows`
(where the patch tokens sit), the patch grid and the layer/head sizes. Two kinds of pooling fit it:

* ``pooled_in_sequence = True`` (CLIP): the pooled rows are rows of the layers' sequence (``[CLS]``, row 0),
  so the layout *is* the sequence; a bias acts in the layers it is given for, every row of it;
* ``pooled_in_sequence = False`` (SigLIP's attention-pooling head): the layers' sequence holds the patch
  rows only, and the pooled row is the head's learned probe query, which attends to the last layer's
  tokens after the layers. A bias's patch rows act in its layers; its pooled rows act on the probe's
  attention logits in the head (:meth:`readout` takes them), whatever the layers -- the one place a
  pooled row exists. The exact trims that compute the pooled rows alone in a layer do not apply.

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
    pooled_in_sequence: bool = True

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens of the steering layout: the patches plus the pooled rows before them (``[CLS]`` for CLIP,
        the probe for an attention-pooling head)."""
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
        """``(B, 3, S, S)`` pixels -> ``(B, T, D)`` hidden states entering layer 0 (``T`` = the sequence: the
        layout's rows for ``pooled_in_sequence`` towers, the patch rows alone otherwise)."""

    @abstractmethod
    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Layer ``index`` on ``(B, T, D)`` with the additive ``mask`` ``(B or 1, 1 or H, L, L)`` in the steering
        layout (or none); a tower whose pooled rows are not in the sequence uses its patch rows."""

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
    def readout(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(I, T', D)`` last hidden states -> ``(R, E)`` projected features; with ``image_index`` ``(R,)`` row
        ``r`` reads image ``image_index[r]``. ``mask`` (layout, ``(R or 1, 1 or H, L, L)``): its pooled rows
        bias the pooling attention -- only where the pooled rows are not in the sequence (else ``None``)."""

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


PROBE_ROWS = slice(0, 1)
PROBE_PATCH_ROWS = slice(1, None)


def probe_sequence_rows(rows: slice) -> slice:
    """For a tower pooled by a probe after its layers: steering-layout rows (probe first) -> rows of the layers'
    sequence (the patches only)."""
    start = max((rows.start or 0), 1) - 1
    return slice(start, None if rows.stop is None else rows.stop - 1)


def probe_sequence_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """For a tower pooled by a probe after its layers: a steering-layout mask -> its patch rows and columns, the
    layers' sequence."""
    return None if mask is None else mask[..., PROBE_PATCH_ROWS, PROBE_PATCH_ROWS]


def require_pooled_row_in_layers(tower: VisionTower, what: str) -> None:
    """A one-line error for analyses that read the pooled row inside the layers, on a tower whose pooled row
    is an attention-pooling probe after them."""
    if not tower.pooled_in_sequence:
        raise ValueError(f"{what} reads the pooled [CLS] row inside the layers; {type(tower).__name__} pools with "
                         f"an attention-pooling probe after them, so it has none (use a [CLS] tower)")


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
