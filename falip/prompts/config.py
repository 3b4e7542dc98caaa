"""Prompts from config data: registries of edits and biases, partial bias specs, prompt grids.

A prompts config maps a display name to a spec (``null`` = plain CLIP)::

    FALIP:            {bias: foveal}                          # the experiment's ${foveal} bias
    all rows (b):     {bias: {formulation: all}}              # ${foveal}, one field changed
    RedCircle+FALIP:  {edits: [red_circle], bias: foveal}
    "FALIP a={alpha} s={sigma}":                              # a grid: one prompt per combination
      bias: foveal
      grid: {alpha: [0.1, 0.2, 0.4], sigma: [1, 100]}

A bias spec is ``null`` (no bias), ``foveal`` (the experiment's foveal bias, ``foveal=`` below), or a
mapping of the fields it changes, merged over that bias. A grid's keys are bias fields; its prompts
are named by formatting the display name with their values (or, without placeholders, by appending
them), in the order of ``itertools.product`` over the keys as written.
"""
from __future__ import annotations

import itertools
from dataclasses import fields
from typing import Any, Mapping

from ..errors import ConfigError
from .edits import EDITS
from ..model.interventions import INTERVENTIONS, Intervention
from .prompt import FovealBias, PastaBias, RoaMaskBias, VisualPrompt

BIASES: dict[str, type] = {cls.name: cls for cls in (FovealBias, PastaBias, RoaMaskBias)}
PROMPT_KEYS = ("edits", "bias", "intervention", "grid")


def _options(cls: type, spec: Mapping[str, Any], kind: str, where: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = set(spec) - known
    if unknown:
        raise ConfigError(f"{where}: {kind} {cls.name!r} has no option(s) {sorted(unknown)}; options: {sorted(known)}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in spec.items()}


def _construct(cls: type, options: dict[str, Any], where: str):
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def edit_from_config(spec: Mapping[str, Any] | str, where: str):
    """An image edit from ``name`` or ``{name, ...options}`` (registry :data:`falip.prompts.edits.EDITS`)."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name not in EDITS:
        raise ConfigError(f"{where}: unknown edit {name!r}; known: {sorted(EDITS)}")
    return _construct(EDITS[name], _options(EDITS[name], spec, "edit", where), where)


def bias_from_config(spec: Mapping[str, Any] | str | None, where: str,
                     foveal: Mapping[str, Any] | None = None) -> FovealBias | None:
    """A bias from a spec (``null`` | a registry name | the fields that differ from ``foveal``)."""
    if spec is None:
        return None
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.get("name", FovealBias.name)
    merged = {**dict(foveal or {}), **spec} if kind == FovealBias.name else spec  # partial specs merge over ${foveal}
    name = merged.pop("name", FovealBias.name)
    if name not in BIASES:
        raise ConfigError(f"{where}: unknown bias {name!r}; known: {sorted(BIASES)}")
    return _construct(BIASES[name], _options(BIASES[name], merged, "bias", where), where)


def intervention_from_config(spec: Mapping[str, Any] | str | None, where: str) -> Intervention | None:
    """An attention intervention from ``name`` or ``{name, ...options}`` (registry ``INTERVENTIONS``)."""
    if spec is None:
        return None
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name not in INTERVENTIONS:
        raise ConfigError(f"{where}: unknown intervention {name!r}; known: {sorted(INTERVENTIONS)}")
    return _construct(INTERVENTIONS[name], _options(INTERVENTIONS[name], spec, "intervention", where), where)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _grid_points(name: str, grid: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if not grid:
        return [(name, {})]
    keys = list(grid)
    bad = [key for key in keys if not isinstance(grid[key], (list, tuple)) or not grid[key]]
    if bad:
        raise ConfigError(f"prompt {name!r}: grid values must be non-empty lists, not {[grid[k] for k in bad]} "
                          f"(keys {bad})")
    points = []
    for values in itertools.product(*(grid[key] for key in keys)):
        point = dict(zip(keys, values))
        if any("{" + key + "}" in name for key in keys):
            label = name.format(**point)
        else:
            label = f"{name} (" + ", ".join(f"{key}={value}" for key, value in point.items()) + ")"
        points.append((label, point))
    return points


def prompts_from_spec(name: str, spec: Mapping[str, Any] | None,
                      foveal: Mapping[str, Any] | None = None) -> list[VisualPrompt]:
    """The prompt(s) one config entry declares: one, or one per grid point."""
    spec = dict(spec or {})
    unknown = set(spec) - set(PROMPT_KEYS)
    if unknown:
        raise ConfigError(f"prompt {name!r}: unknown key(s) {sorted(unknown)}; a prompt has {list(PROMPT_KEYS)}")
    where = f"prompt {name!r}"
    edits = tuple(edit_from_config(edit, where) for edit in (spec.get("edits") or []))
    grid = dict(spec.get("grid") or {})
    if grid and spec.get("bias") is None:
        raise ConfigError(f"{where}: a grid varies bias fields, so the prompt needs a bias (e.g. bias: foveal)")
    prompts = []
    for label, point in _grid_points(name, grid):
        bias_spec = spec.get("bias")
        if point:
            bias_spec = {**({"name": bias_spec} if isinstance(bias_spec, str) else dict(bias_spec)), **point}
        prompts.append(VisualPrompt(label, edits, bias_from_config(bias_spec, f"prompt {label!r}", foveal),
                                    intervention_from_config(spec.get("intervention"), where),
                                    grid_point=tuple((key, _hashable(value)) for key, value in point.items())))
    return prompts


def prompt_from_config(name: str, spec: Mapping[str, Any] | None,
                       foveal: Mapping[str, Any] | None = None) -> VisualPrompt:
    """One prompt from ``{edits: [...], bias: ...}`` (no grid)."""
    prompts = prompts_from_spec(name, spec, foveal)
    if len(prompts) != 1:
        raise ConfigError(f"prompt {name!r} declares a grid of {len(prompts)} prompts: use prompts_from_config")
    return prompts[0]


def prompts_from_config(specs: Mapping[str, Any], foveal: Mapping[str, Any] | None = None) -> list[VisualPrompt]:
    """Every prompt of a prompts config, in config order, grids expanded; names must be unique."""
    prompts = [prompt for name, spec in specs.items() for prompt in prompts_from_spec(str(name), spec, foveal)]
    names = [prompt.name for prompt in prompts]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"prompt names must be unique; repeated: {repeated}")
    return prompts
