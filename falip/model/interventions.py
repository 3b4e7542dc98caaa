"""Attention interventions: what a visual prompt does inside CLIP's attention besides an additive bias.

Each intervention is data (a frozen dataclass: which layers, which heads) plus the hooks that carry
it out for one forward call, at the tower's named sites (:mod:`falip.model.tower`: ``q``, ``k``, ``v``,
``z`` = the heads' outputs before the output projection, ``resid_pre``), installed for the call and
removed when it ends (the TransformerLens ``run_with_hooks`` discipline): no copy of any modeling code,
and the next plain call is the plain backbone. Semantics inferred from the paper (docs/method.md says
which):

* :class:`ReplaceValues` (``replace_v``) -- the prompted stream (edited image and/or bias) uses the
  reference stream's (unedited image, no bias) values ``v`` in the chosen layers;
  :class:`ReplaceQueriesKeys` (``replace_qk``) likewise for ``q`` and ``k``.
* :class:`Unleash` (``unleash``) -- in the chosen layers the pooled row's (``[CLS]``) attention output
  becomes ``sum_h (2 G'_h - G_h)`` (G' prompted, G reference): each chosen head's pooled-row output
  ``z'_h`` becomes ``2 z'_h - z_h`` before the output projection (linear, so this is exactly the sum
  above plus the projection's bias). For a bias-only prompt (same pixels) ``z_h`` comes from the same
  pass: the pooled row of the attention recomputed without the bias on the same ``q, k, v`` (one pass).
* :class:`FeatureMask` (``feature_mask``) -- the hidden states of the patch tokens outside the ROA
  are zeroed at the input of the chosen layers (the hard ``-inf`` attention variant is the
  ``roa_mask`` bias).

Reference-stream tensors are captured by :func:`capture` and handed to the prompted stream's hooks.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import torch


def resolve_layers(layers: Sequence[int] | None, num_layers: int, what: str = "layer") -> list[int]:
    """Layer indices (negative = from the end; ``None`` = all) as sorted non-negative ints; an index the
    tower lacks is an error naming ``what`` (e.g. "bias layer") and the valid range."""
    if layers is None:
        return list(range(num_layers))
    chosen = set()
    for layer in layers:
        if not -num_layers <= int(layer) < num_layers:
            raise ValueError(f"{what} {layer} does not exist: the vision tower has {num_layers} layers "
                             f"(valid: {-num_layers}..{num_layers - 1})")
        chosen.add(int(layer) % num_layers)
    return sorted(chosen)


class Intervention:
    """Base class: ``layers`` to act on; ``references``: reference-stream tensors the hooks need."""

    name: ClassVar[str] = ""
    layers: tuple[int, ...] | None

    def references(self, one_pass: bool) -> tuple[str, ...]:
        """Names of the reference tensors to capture (empty: no reference stream)."""
        return ()

    def hooks(self, tower: Any, layers: Sequence[int], reference: dict, row_index: torch.Tensor | None,
              roa_tokens: torch.Tensor | None) -> list[tuple[int, str, Any]]:
        """The ``(layer, site, fn)`` hooks for one forward on ``tower``: the ``layers`` to act on, the captured
        ``reference`` tensors (``{(layer, site): tensor}``), which reference row each forward row reads
        (``row_index``), and the rows' ROA tokens ``(B, T)`` bool (pooled rows included)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        values = asdict(self)  # type: ignore[call-overload]
        for key, value in values.items():
            if isinstance(value, tuple):
                values[key] = list(value)
        return {"name": self.name, **values}


def _rows(tensor: torch.Tensor, row_index: torch.Tensor | None) -> torch.Tensor:
    return tensor if row_index is None else tensor[row_index]


@dataclass(frozen=True)
class ReplaceValues(Intervention):
    """The prompted stream attends with the reference stream's values in ``layers``."""

    name: ClassVar[str] = "replace_v"
    layers: tuple[int, ...] | None = (-4, -3, -2, -1)
    replaced: ClassVar[tuple[str, ...]] = ("v",)

    def references(self, one_pass: bool) -> tuple[str, ...]:
        return self.replaced

    def hooks(self, tower, layers, reference, row_index, roa_tokens):
        return [(index, name, lambda output, value=_rows(reference[(index, name)], row_index): value.to(output.dtype))
                for index in layers for name in self.replaced]


@dataclass(frozen=True)
class ReplaceQueriesKeys(ReplaceValues):
    """The prompted stream attends with the reference stream's queries and keys in ``layers``."""

    name: ClassVar[str] = "replace_qk"
    replaced: ClassVar[tuple[str, ...]] = ("q", "k")


@dataclass(frozen=True)
class Unleash(Intervention):
    """``[CLS]`` head outputs ``z'_h -> 2 z'_h - z_h`` in ``layers`` for ``heads`` (``None`` = all).

    ``top_k`` + ``calibration``: per layer, only the ``top_k`` heads with the largest mean change in a
    head-sensitivity CSV (``falip-run experiment=head_sensitivity`` on a calibration split), for the
    row ``calibration_prompt``."""

    name: ClassVar[str] = "unleash"
    layers: tuple[int, ...] | None = (-4, -3, -2, -1)
    heads: tuple[int, ...] | None = None
    top_k: int | None = None
    calibration: str | None = None
    calibration_prompt: str = "FALIP"

    def __post_init__(self) -> None:
        if (self.top_k is None) != (self.calibration is None):
            raise ValueError("unleash top_k and calibration go together (a head-sensitivity CSV and how many heads)")
        if self.top_k is not None and self.heads is not None:
            raise ValueError("unleash takes heads or top_k + calibration, not both")

    def heads_of(self, layer: int, num_heads: int) -> list[int]:
        """The heads acted on in ``layer`` (non-negative index, as in head-sensitivity CSVs)."""
        if self.top_k is None:
            return list(range(num_heads)) if self.heads is None else [int(h) for h in self.heads]
        with open(self.calibration, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["prompt"] == self.calibration_prompt
                    and int(r["layer"]) == layer]
        if not rows:
            raise ValueError(f"{self.calibration} has no row for prompt {self.calibration_prompt!r}, layer {layer}")
        ranked = sorted(rows, key=lambda r: -float(r["mean_change"]))
        return sorted(int(r["head"]) for r in ranked[:self.top_k])

    def references(self, one_pass: bool) -> tuple[str, ...]:
        return () if one_pass else ("z",)

    def hooks(self, tower, layers, reference, row_index, roa_tokens):
        out = []
        one_pass = not reference
        heads, size, pooled = tower.num_heads, tower.head_dim, tower.pooled_rows
        for index in layers:
            chosen = self.heads_of(index, heads)
            if any(not 0 <= h < heads for h in chosen):
                raise ValueError(f"unleash heads {chosen} do not exist: layers have {heads} heads")
            columns = torch.cat([torch.arange(h * size, (h + 1) * size) for h in chosen])
            seen: dict[str, torch.Tensor] = {}
            if one_pass:  # z_h without the bias, from this pass's own q, k, v
                for name in ("q", "k", "v"):
                    out.append((index, name, lambda output, name=name, seen=seen: seen.__setitem__(name, output)))

            def edit(z, index=index, seen=seen, columns=columns):
                if one_pass:
                    plain = plain_pooled_output(seen["q"], seen["k"], seen["v"], heads, size,
                                                tower.attention_scale(index), pooled)
                else:
                    plain = _rows(reference[(index, "z")], row_index)[:, pooled]
                z = z.clone()
                here = columns.to(z.device)
                z[:, pooled, here] = 2 * z[:, pooled, here] - plain[:, :, here].to(z.dtype)
                return z

            out.append((index, "z", edit))
        return out


def plain_pooled_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, head_dim: int,
                        scale: float, pooled: slice) -> torch.Tensor:
    """The ``pooled`` query rows of multi-head attention without any bias, ``(B, P, H*d)``, from ``(B, T, H*d)``
    q, k, v."""
    batch, tokens, _ = k.shape
    query = q[:, pooled]
    count = query.shape[1]
    query = query.reshape(batch, count, heads, head_dim).transpose(1, 2).float()
    keys = k.reshape(batch, tokens, heads, head_dim).transpose(1, 2).float()
    values = v.reshape(batch, tokens, heads, head_dim).transpose(1, 2).float()
    weights = torch.softmax((query @ keys.transpose(-1, -2)) * scale, dim=-1)  # (B, H, P, T)
    return (weights @ values).transpose(1, 2).reshape(batch, count, heads * head_dim)


@dataclass(frozen=True)
class FeatureMask(Intervention):
    """Patch tokens outside the ROA get zero hidden states at the input of ``layers`` (the paper's
    "feature mask" row; inferred)."""

    name: ClassVar[str] = "feature_mask"
    layers: tuple[int, ...] | None = (-4, -3, -2, -1)

    def hooks(self, tower, layers, reference, row_index, roa_tokens):
        if roa_tokens is None:
            raise ValueError("feature_mask needs the regions' tokens: use it in a prompt with a region")
        return [(index, "resid_pre", lambda hidden, keep=roa_tokens:
                 hidden * keep[:, :, None].to(device=hidden.device, dtype=hidden.dtype)) for index in layers]


INTERVENTIONS: dict[str, type[Intervention]] = {cls.name: cls for cls in (ReplaceValues, ReplaceQueriesKeys, Unleash,
                                                                        FeatureMask)}
