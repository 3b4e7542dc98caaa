"""Prompts from config: partial bias specs merge over the experiment's foveal bias; grids expand."""
import pytest

from falip.cli import compose
from falip.errors import ConfigError
from falip.prompts import FovealBias, prompt_from_config, prompts_from_config

FOVEAL = {"name": "foveal", "alpha": 8.0, "sigma": 100.0, "formulation": "cls", "layers": None,
          "cell_rule": "released", "eps": 1e-6}


def test_partial_bias_changes_only_what_it_names():
    prompts = prompts_from_config({"none": None, "FALIP": {"bias": "foveal"}, "rows": {"bias": {"formulation": "all"}},
                                   "last": {"edits": ["red_circle"], "bias": {"layers": [-1]}}}, foveal=FOVEAL)
    none, falip, rows, last = prompts
    assert none.bias is None and not none.edits
    assert falip.bias == FovealBias(alpha=8.0, layers=None, cell_rule="released")
    assert rows.bias == FovealBias(alpha=8.0, layers=None, cell_rule="released", formulation="all")
    assert last.bias.layers == (-1,) and last.bias.alpha == 8.0 and last.edits[0].name == "red_circle"
    # without an experiment's foveal bias, the library defaults
    assert prompt_from_config("F", {"bias": "foveal"}).bias == FovealBias()


def test_grid_expands_in_product_order_with_formatted_names():
    spec = {"bias": "foveal", "grid": {"alpha": [0.1, 0.4], "sigma": [1.0, 100.0]}}
    prompts = prompts_from_config({"FALIP a={alpha} s={sigma}": spec}, foveal=FOVEAL)
    assert [p.name for p in prompts] == ["FALIP a=0.1 s=1.0", "FALIP a=0.1 s=100.0", "FALIP a=0.4 s=1.0",
                                         "FALIP a=0.4 s=100.0"]
    assert [(p.bias.alpha, p.bias.sigma) for p in prompts] == [(0.1, 1.0), (0.1, 100.0), (0.4, 1.0), (0.4, 100.0)]
    assert all(p.bias.cell_rule == "released" for p in prompts)
    unnamed = prompts_from_config({"F": {"bias": {"formulation": "all"}, "grid": {"layers": [[-1], None]}}})
    assert [p.name for p in unnamed] == ["F (layers=[-1])", "F (layers=None)"]
    assert [p.bias.layers for p in unnamed] == [(-1,), None] and unnamed[0].bias.formulation == "all"


@pytest.mark.parametrize("specs, match", [
    ({"x": {"bias": {"beta": 1}}}, "no option"),
    ({"x": {"bias": {"formulation": "rows"}}}, "formulation"),
    ({"x": {"edits": ["circle"]}}, "unknown edit"),
    ({"x": {"edit": ["crop"]}}, "unknown key"),
    ({"x": {"grid": {"alpha": [1]}}}, "needs a bias"),
    ({"x": {"bias": "foveal", "grid": {"alpha": []}}}, "non-empty lists"),
    ({"x a={alpha}": {"bias": "foveal", "grid": {"alpha": [1, 1]}}}, "unique"),
])
def test_bad_specs_name_the_prompt_and_the_fix(specs, match):
    with pytest.raises(ConfigError, match=match):
        prompts_from_config(specs)


def test_bias_defaults_live_in_one_place():
    """configs/foveal/released.yaml states the library's defaults; alpha is the model's (None in the library)."""
    foveal = compose(["experiment=refcoco_rec"])["foveal"]
    defaults = FovealBias().config()
    assert defaults["alpha"] is None and foveal["alpha"] == 0.2  # clip_vit_b16's foveal_alpha
    assert list(foveal["layers"]) == defaults["layers"]
    for key in ("sigma", "formulation", "eps", "cell_rule"):
        assert foveal[key] == defaults[key], key
