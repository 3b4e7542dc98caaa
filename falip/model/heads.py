"""Per-head decomposition of the pooled row's attention update (the paper's "Unleash" analysis).

In a layer, the attention output of the pooled row (``[CLS]``) is ``W_o z + b_o`` with ``z`` the heads'
outputs side by side; so it is a sum of per-head terms ``G_h = W_o[:, h] z_h`` plus the bias ``b_o``.
This module reads ``z`` at the tower's ``z`` site (a hook, no copy of any modeling code) and asks the
tower to split it (:meth:`~falip.model.tower.VisionTower.head_terms`).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .clip import FoveatedCLIP
from .interventions import resolve_layers
from .steering import FULL_ROWS, Steering
from .tower import capture, require_pooled_row_in_layers


def head_contributions(model: FoveatedCLIP, pixel_values: torch.Tensor, *, attention_bias: torch.Tensor | None = None,
                       bias_layers: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                       steering: Steering | None = None) -> torch.Tensor:
    """Each head's contribution to the pooled row's residual stream, ``(B, n_layers, n_heads, width)``.

    For every layer in ``layers`` (default all; negative = from the end), ``G_h`` is head ``h``'s share of
    that layer's attention update of the pooled row (before the final norm): summed over heads and added
    to :meth:`~falip.model.tower.VisionTower.head_bias` it is the update itself. With ``attention_bias`` /
    ``bias_layers`` the forward is biased as in :meth:`FoveatedCLIP.encode_image`; ``steering`` carries a
    whole prompt instead (bias, intervention, reference stream).
    """
    tower = model.tower
    require_pooled_row_in_layers(tower, "the per-head decomposition")
    chosen = resolve_layers(layers, model.num_layers)
    pooled = tower.pooled_rows
    with torch.inference_mode(), capture(tower, chosen, ("z",)) as store:
        model.encode_image(pixel_values, attention_bias, bias_layers, steering=steering, plan=FULL_ROWS)
        stacked = [tower.head_terms(i, store[(i, "z")][:, pooled.start]) for i in chosen]
        return torch.stack(stacked, dim=1).float()
