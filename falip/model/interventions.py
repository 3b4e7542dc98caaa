"""Attention interventions: what a visual prompt does inside CLIP's attention besides an additive bias.

Each intervention is data (a frozen dataclass: which layers, which heads) plus the hooks that carry
it out for one forward call, installed on the ``q_proj`` / ``k_proj`` / ``v_proj`` outputs and the
``out_proj`` input of ``transformers``' ``CLIPAttention`` and removed when the call ends (the
TransformerLens ``run_with_hooks`` discipline): no copy of CLIP's modeling code, and the next plain
call is plain CLIP. Semantics inferred from the paper (docs/method.md says which):

* :class:`ReplaceValues` (``replace_v``) -- the prompted stream (edited image and/or bias) uses the
  reference stream's (unedited image, no bias) values ``v`` in the chosen layers;
  :class:`ReplaceQueriesKeys` (``replace_qk``) likewise for ``q`` and ``k``.
* :class:`Unleash` (``unleash``) -- in the chosen layers the ``[CLS]`` attention output becomes
  ``sum_h (2 G'_h - G_h)`` (G' prompted, G reference): each chosen head's ``[CLS]`` output ``z'_h``
  becomes ``2 z'_h - z_h`` before the output projection (linear, so this is exactly the sum above
  plus the projection's bias). For a bias-only prompt (same pixels) ``z_h`` comes from the same
  pass: row 0 of the attention recomputed without the bias on the same ``q, k, v`` (one pass).
* :class:`FeatureMask` (``feature_mask``) -- the hidden states of the patch tokens outside the ROA
  are zeroed at the input of the chosen layers (the hard ``-inf`` attention variant is the
  ``roa_mask`` bias).

Reference-stream tensors are captured by :func:`capture` and handed to the prompted stream's hooks.
"""
from __future__ import annotations

import contextlib
import csv
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import nn


def resolve_layers(layers: Sequence[int] | None, num_layers: int) -> list[int]:
    """Layer indices (negative = from the end; ``None`` = all) as sorted non-negative ints."""
    if layers is None:
        return list(range(num_layers))
    chosen = set()
    for layer in layers:
        if not -num_layers <= int(layer) < num_layers:
            raise ValueError(f"layer {layer} does not exist: the vision tower has {num_layers} layers")
        chosen.add(int(layer) % num_layers)
    return sorted(chosen)


@contextlib.contextmanager
def hooks(registrations: Sequence[tuple[nn.Module, str, Any]]) -> Iterator[None]:
    """Install ``(module, "forward" | "forward_pre", fn)`` hooks for the block, always removing them."""
    handles = []
    try:
        for module, kind, fn in registrations:
            register = module.register_forward_pre_hook if kind == "forward_pre" else module.register_forward_hook
            handles.append(register(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def capture(layers: dict[int, nn.Module], what: Sequence[str]) -> Iterator[dict[tuple[int, str], torch.Tensor]]:
    """Record, per layer in ``layers`` (index -> ``CLIPEncoderLayer``), the tensors named in ``what``:
    ``q``, ``k``, ``v`` (projection outputs, ``(B, T, H*d)``) and ``z`` (the heads' outputs, the
    ``out_proj`` input, ``(B, T, H*d)``)."""
    store: dict[tuple[int, str], torch.Tensor] = {}
    registrations = []
    for index, layer in layers.items():
        attention = layer.self_attn
        for name in what:
            if name == "z":
                registrations.append((attention.out_proj, "forward_pre",
                                      lambda module, args, index=index: store.__setitem__((index, "z"), args[0])))
            else:
                projection = getattr(attention, f"{name}_proj")
                registrations.append((projection, "forward",
                                      lambda module, args, out, index=index, name=name:
                                      store.__setitem__((index, name), out)))
    with hooks(registrations):
        yield store


class Intervention:
    """Base class: ``layers`` to act on; ``references``: reference-stream tensors the hooks need."""

    name: ClassVar[str] = ""
    layers: tuple[int, ...] | None

    def references(self, one_pass: bool) -> tuple[str, ...]:
        """Names of the reference tensors to capture (empty: no reference stream)."""
        return ()

    def registrations(self, layers: dict[int, nn.Module], reference: dict, row_index: torch.Tensor | None,
                      roa_tokens: torch.Tensor | None) -> list[tuple[nn.Module, str, Any]]:
        """The hooks for one forward: ``layers`` (index -> ``CLIPEncoderLayer``) to act on, the captured
        ``reference`` tensors, which reference row each forward row reads (``row_index``), and the
        rows' ROA tokens ``(B, T)`` bool ([CLS] included)."""
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

    def registrations(self, layers, reference, row_index, roa_tokens):
        out = []
        for index, layer in layers.items():
            attention = layer.self_attn
            for name in self.replaced:
                value = _rows(reference[(index, name)], row_index)
                out.append((getattr(attention, f"{name}_proj"), "forward",
                            lambda module, args, output, value=value: value.to(output.dtype)))
        return out


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

    def registrations(self, layers, reference, row_index, roa_tokens):
        out = []
        one_pass = not reference
        for index, layer in layers.items():
            attention = layer.self_attn
            heads, size = attention.num_heads, attention.head_dim
            chosen = self.heads_of(index, heads)
            if any(not 0 <= h < heads for h in chosen):
                raise ValueError(f"unleash heads {chosen} do not exist: layers have {heads} heads")
            columns = torch.cat([torch.arange(h * size, (h + 1) * size) for h in chosen])
            seen: dict[str, torch.Tensor] = {}
            if one_pass:  # z_h without the bias, from this pass's own q, k, v
                for name in ("q", "k", "v"):
                    out.append((getattr(attention, f"{name}_proj"), "forward",
                                lambda module, args, output, name=name, seen=seen: seen.__setitem__(name, output)))

            def edit(module, args, attention=attention, index=index, seen=seen, columns=columns):
                z = args[0]
                if one_pass:
                    cls_plain = plain_cls_output(seen["q"], seen["k"], seen["v"], attention.num_heads,
                                                 attention.head_dim, attention.scale)
                else:
                    cls_plain = _rows(reference[(index, "z")], row_index)[:, 0]
                z = z.clone()
                columns_here = columns.to(z.device)
                z[:, 0, columns_here] = 2 * z[:, 0, columns_here] - cls_plain[:, columns_here].to(z.dtype)
                return (z,)

            out.append((attention.out_proj, "forward_pre", edit))
        return out


def plain_cls_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, head_dim: int,
                     scale: float) -> torch.Tensor:
    """The ``[CLS]`` row of multi-head attention without any bias, ``(B, H*d)``, from ``(B, T, H*d)`` q, k, v."""
    batch, tokens, _ = k.shape
    query = q[:, 0].reshape(batch, heads, 1, head_dim).float()
    keys = k.reshape(batch, tokens, heads, head_dim).transpose(1, 2).float()
    values = v.reshape(batch, tokens, heads, head_dim).transpose(1, 2).float()
    weights = torch.softmax((query @ keys.transpose(-1, -2)) * scale, dim=-1)  # (B, H, 1, T)
    return (weights @ values).reshape(batch, heads * head_dim)


@dataclass(frozen=True)
class FeatureMask(Intervention):
    """Patch tokens outside the ROA get zero hidden states at the input of ``layers`` (the paper's
    "feature mask" row; inferred)."""

    name: ClassVar[str] = "feature_mask"
    layers: tuple[int, ...] | None = (-4, -3, -2, -1)

    def registrations(self, layers, reference, row_index, roa_tokens):
        if roa_tokens is None:
            raise ValueError("feature_mask needs the regions' tokens: use it in a prompt with a region")
        out = []
        for layer in layers.values():
            out.append((layer, "forward_pre",
                        lambda module, args, keep=roa_tokens:
                        (args[0] * keep[:, :, None].to(device=args[0].device, dtype=args[0].dtype),) + tuple(args[1:])))
        return out


INTERVENTIONS: dict[str, type[Intervention]] = {cls.name: cls for cls in (ReplaceValues, ReplaceQueriesKeys, Unleash,
                                                                        FeatureMask)}
