"""A second vision tower plugs in through the contract alone (falip/model/tower.py): a randomly initialised
tiny ViT with its own module names, its own attention code and its own hook sites passes the bias,
intervention, trim and head-decomposition checks that HF CLIP passes -- through the same steering code
(falip/model/steering.py), with nothing of tasks, encoding or the runner touched."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from falip.model.bias import bias_from_token_weights, foveal_token_weights
from falip.model.interventions import FeatureMask, ReplaceValues, Unleash
from falip.model.steering import EXACT, FULL_ROWS, ExecutionPlan, Steering, encode_steered
from falip.model.tower import VisionTower, capture


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm_a, self.norm_b = nn.LayerNorm(width), nn.LayerNorm(width)
        self.query, self.key, self.value, self.proj = (nn.Linear(width, width) for _ in range(4))
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))


class TinyViT(VisionTower):
    """[CLS] + 4x4 patches of 8 px, 3 blocks of 2 heads; attention written here, with its own hook points."""

    pooled_rows = slice(0, 1)
    patch_rows = slice(1, None)

    def __init__(self, seed: int = 0, width: int = 16):
        super().__init__()
        torch.manual_seed(seed)
        self.image_size, self.patch_size, self.num_layers, self.num_heads = 32, 8, 3, 2
        self.head_dim = width // self.num_heads
        self.stem = nn.Conv2d(3, width, 8, 8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width))
        self.positions = nn.Parameter(torch.randn(1, 17, width) * 0.1)
        self.blocks = nn.ModuleList(Block(width) for _ in range(self.num_layers))
        self.final_norm, self.head = nn.LayerNorm(width), nn.Linear(width, 12, bias=False)
        self._hooks: dict[tuple[int, str], list] = {}

    attn_implementation = "eager"

    def _site(self, index, site, tensor):
        for fn in self._hooks.get((index, site), []):
            replaced = fn(tensor)
            tensor = tensor if replaced is None else replaced
        return tensor

    def add_hook(self, index, site, fn, first=False):
        hooks = self._hooks.setdefault((index, site), [])
        hooks.insert(0, fn) if first else hooks.append(fn)
        return lambda: hooks.remove(fn)

    def embed(self, pixels):
        patches = self.stem(pixels).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(pixels), -1, -1), patches], 1) + self.positions

    def _attention(self, index, normed_q, normed_kv, mask, hooked):
        block = self.blocks[index]
        site = (lambda name, t: self._site(index, name, t)) if hooked else (lambda name, t: t)
        q, k, v = site("q", block.query(normed_q)), site("k", block.key(normed_kv)), site("v", block.value(normed_kv))
        batch, rows, width = q.shape

        def heads(t):
            return t.view(batch, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        logits = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(self.head_dim)
        if mask is not None:
            logits = logits + mask
        z = (logits.softmax(-1) @ heads(v)).transpose(1, 2).reshape(batch, rows, width)
        return block.proj(site("z", z))

    def layer(self, index, hidden, mask):
        hidden = self._site(index, "resid_pre", hidden)
        block = self.blocks[index]
        normed = block.norm_a(hidden)
        hidden = hidden + self._attention(index, normed, normed, mask, hooked=True)
        return hidden + block.ffn(block.norm_b(hidden))

    def layer_rows(self, index, hidden, mask, rows, image_index=None):
        block = self.blocks[index]
        normed = block.norm_a(hidden)
        queries, residual = normed[:, rows], hidden[:, rows]
        if image_index is not None:
            queries, normed, residual = queries[image_index], normed[image_index], residual[image_index]
        out = residual + self._attention(index, queries, normed, None if mask is None else mask[..., rows, :], False)
        return out + block.ffn(block.norm_b(out))

    def pooled_stream_layer(self, index, image_hidden, pooled, mask, image_index):
        block = self.blocks[index]
        normed = torch.cat([block.norm_a(pooled), block.norm_a(image_hidden[:, 1:])[image_index]], 1)
        out = pooled + self._attention(index, normed[:, :1], normed, None if mask is None else mask[..., :1, :], False)
        return out + block.ffn(block.norm_b(out))

    def readout(self, hidden, mask=None, image_index=None):
        assert mask is None  # the [CLS] row is biased inside the layers
        pooled = hidden[:, 0] if image_index is None else hidden[image_index, 0]
        return self.head(self.final_norm(pooled))

    def library_features(self, pixels):
        hidden = self.embed(pixels)
        for index in range(self.num_layers):
            hidden = self.layer(index, hidden, None)
        return self.readout(hidden)

    def head_terms(self, index, z_pooled):
        weight = self.blocks[index].proj.weight  # (width, H*d)
        per_head = z_pooled.view(len(z_pooled), self.num_heads, self.head_dim)
        return torch.einsum("bhd,whd->bhw", per_head, weight.view(weight.shape[0], self.num_heads, self.head_dim))

    def head_bias(self, index):
        return self.blocks[index].proj.bias


def by_hand(tower: TinyViT, pixels, mask=None, layers=()):
    """The tower written out once more, the mask added in ``layers``: the independent reference."""
    hidden = blocks_by_hand(tower, tower.embed(pixels), None if mask is None else mask[:, None], layers)
    return tower.head(tower.final_norm(hidden[:, 0]))


def blocks_by_hand(tower: TinyViT, hidden, layer_mask=None, layers=()):
    """The tower's blocks written out (2 heads), ``layer_mask`` added to the logits in ``layers``."""
    for index, block in enumerate(tower.blocks):
        normed = block.norm_a(hidden)
        q, k, v = block.query(normed), block.key(normed), block.value(normed)
        b, t, w = q.shape
        split = [x.view(b, t, 2, w // 2).transpose(1, 2) for x in (q, k, v)]
        logits = split[0] @ split[1].transpose(-1, -2) / math.sqrt(w // 2)
        if layer_mask is not None and index in layers:
            logits = logits + layer_mask
        hidden = hidden + block.proj((logits.softmax(-1) @ split[2]).transpose(1, 2).reshape(b, t, w))
        hidden = hidden + block.ffn(block.norm_b(hidden))
    return hidden


BOXES = [(2.0, 3.0, 20.0, 30.0), (8.0, 0.0, 32.0, 14.0), (0.0, 0.0, 9.0, 9.0), (10.0, 10.0, 28.0, 31.0),
         (4.0, 16.0, 31.0, 27.0)]


@pytest.fixture(scope="module")
def tower():
    return TinyViT().eval()


def bias(formulation="cls"):
    return bias_from_token_weights(foveal_token_weights(BOXES, 32, 8, alpha=3.0, cell_rule="overlap").float(), formulation)


@torch.no_grad()
def test_unsteered_is_the_towers_own_forward_and_the_bias_matches_a_hand_written_attention(tower):
    pixels = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain, used = encode_steered(tower, pixels)
    assert used is None and torch.equal(plain, tower.library_features(pixels))
    for layers in ([0, 1, 2], [1, 2], [2]):
        got, _ = encode_steered(tower, pixels, Steering(bias=bias(), bias_layers=layers), plan=FULL_ROWS)
        assert (got - by_hand(tower, pixels, bias(), layers)).abs().max() < 1e-5
        assert (got - plain).abs().max() > 1e-3  # the bias acts


@torch.no_grad()
@pytest.mark.parametrize("formulation", ["cls", "all"])
@pytest.mark.parametrize("layers", [None, [-1], [1, 2]])
def test_exact_trims_and_shared_rows_equal_the_full_forward(tower, formulation, layers):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    index = [0, 0, 1, 1, 1]
    steering = Steering(bias=bias(formulation), bias_layers=layers)
    trimmed, used = encode_steered(tower, images, steering, index, EXACT)
    full, _ = encode_steered(tower, images[index], steering, plan=FULL_ROWS)
    assert (trimmed - full).abs().max() < 1e-5
    assert used.pooled_only_last_layer and used.shared_first_biased_layer is (formulation == "cls")
    stream, used = encode_steered(tower, images, steering, index, ExecutionPlan(cls_stream=True))
    assert used.cls_stream is (formulation == "cls")
    if layers == [-1] and formulation == "cls":
        assert (stream - full).abs().max() < 1e-5  # one biased layer, the last: the approximation is exact


@torch.no_grad()
def test_interventions_act_through_the_towers_own_sites(tower):
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    plain, _ = encode_steered(tower, pixels)
    same = Steering(intervention=ReplaceValues(layers=(-1,)), reference_pixels=pixels, reference_index=[0, 1, 2])
    assert (encode_steered(tower, pixels, same)[0] - plain).abs().max() < 1e-5
    other = Steering(intervention=ReplaceValues(layers=(-1,)), reference_pixels=pixels + 1, reference_index=[0, 1, 2])
    assert (encode_steered(tower, pixels, other)[0] - plain).abs().max() > 1e-3
    everything = torch.ones(3, 17, dtype=torch.bool)
    assert (encode_steered(tower, pixels, Steering(intervention=FeatureMask(layers=None), roa_tokens=everything))[0]
            - plain).abs().max() < 1e-5
    # Unleash without a bias: 2 z - z = z, plain; with a bias it moves the embedding away from FALIP alone
    assert (encode_steered(tower, pixels, Steering(intervention=Unleash(layers=None)))[0] - plain).abs().max() < 1e-5
    biased = Steering(bias=bias()[:3], bias_layers=[-2, -1])
    unleashed = Steering(bias=bias()[:3], bias_layers=[-2, -1], intervention=Unleash(layers=(-2, -1)))
    assert (encode_steered(tower, pixels, unleashed)[0] - encode_steered(tower, pixels, biased)[0]).abs().max() > 1e-4
    assert not any(tower._hooks.values())  # every hook removed after the call


@torch.no_grad()
def test_head_terms_sum_to_the_pooled_rows_update(tower):
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with capture(tower, range(3), ("z",)) as store:
        encode_steered(tower, pixels, Steering(bias=bias()[:2], bias_layers=[-1]), plan=FULL_ROWS)
    assert not any(tower._hooks.values())
    for index in range(3):
        z_pooled = store[(index, "z")][:, 0]
        terms = tower.head_terms(index, z_pooled)
        assert terms.shape == (2, 2, 16)
        assert torch.allclose(terms.sum(1) + tower.head_bias(index), tower.blocks[index].proj(z_pooled), atol=1e-6)


class TinyProbeViT(TinyViT):
    """The same blocks without [CLS]: 4x4 patch tokens only, pooled after the layers by a learned probe query
    (one attention over the last tokens, as SigLIP's head) -- the other kind of pooling the contract names."""

    pooled_in_sequence = False

    def __init__(self, seed: int = 0, width: int = 16):
        super().__init__(seed, width)
        self.probe = nn.Parameter(torch.randn(1, 1, width))
        self.pool_q, self.pool_kv = nn.Linear(width, width), nn.Linear(width, 2 * width)

    def embed(self, pixels):
        return self.stem(pixels).flatten(2).transpose(1, 2) + self.positions[:, 1:]

    def layer(self, index, hidden, mask):
        return super().layer(index, hidden, None if mask is None else mask[..., 1:, 1:])

    def layer_rows(self, index, hidden, mask, rows, image_index=None):
        raise AssertionError("a probe tower's layers are never trimmed to the pooled rows")

    def readout(self, hidden, mask=None, image_index=None):
        normed = self.final_norm(hidden)
        keys, values = self.pool_kv(normed).chunk(2, dim=-1)
        if image_index is not None:
            keys, values = keys[image_index], values[image_index]
        query = self.pool_q(self.probe).expand(len(keys), -1, -1)
        batch, width = len(keys), keys.shape[-1]

        def heads(t):
            return t.view(batch, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        logits = heads(query) @ heads(keys).transpose(-1, -2) / math.sqrt(self.head_dim)
        if mask is not None:
            logits = logits + mask[..., :1, 1:]
        pooled = (logits.softmax(-1) @ heads(values)).transpose(1, 2).reshape(batch, width)
        return self.head(pooled)


def probe_by_hand(tower: TinyProbeViT, pixels, mask=None, layers=()):
    """The probe tower written out: blocks over the patches (the mask's patch rows in ``layers``), then the
    probe's attention with the mask's row 0 added to its logits."""
    hidden = blocks_by_hand(tower, tower.embed(pixels), None if mask is None else mask[:, None, 1:, 1:], layers)
    normed = tower.final_norm(hidden)
    keys, values = tower.pool_kv(normed).chunk(2, dim=-1)
    query = tower.pool_q(tower.probe)[0, 0]  # (w,)
    out = []
    for row in range(len(pixels)):
        per_head = []
        for h in range(2):
            part = slice(h * 8, (h + 1) * 8)
            scores = keys[row, :, part] @ query[part] / math.sqrt(8)
            if mask is not None:
                scores = scores + mask[row, 0, 1:]
            per_head.append(scores.softmax(0) @ values[row, :, part])
        out.append(torch.cat(per_head))
    return tower.head(torch.stack(out))


@torch.no_grad()
def test_a_probe_pooled_tower_plugs_in_through_the_contract_alone():
    tower = TinyProbeViT().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    index = [0, 0, 1, 1, 1]
    plain, used = encode_steered(tower, images)
    assert used is None and torch.equal(plain, tower.library_features(images))
    for formulation, layers in (("cls", [-1]), ("cls", None), ("all", [-1]), ("patches", [1, 2])):
        steering = Steering(bias=bias(formulation), bias_layers=layers)
        shared, used = encode_steered(tower, images, steering, index)
        expected = probe_by_hand(tower, images[index], bias(formulation),
                                 set() if formulation == "cls" else {i % 3 for i in (layers or [0, 1, 2])})
        assert (shared - expected).abs().max() < 1e-5, formulation
        assert not used.pooled_only_last_layer and not used.shared_first_biased_layer
        assert (shared - encode_steered(tower, images[index])[0]).abs().max() > 1e-3  # the bias acts
    with pytest.raises(ValueError, match="attention-pooling probe"):
        encode_steered(tower, images, Steering(intervention=Unleash(layers=None)))
