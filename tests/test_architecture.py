"""The package's layers: every module imports only downward, and the tasks share the runner's one loop.

Layers, bottom to top (docs/architecture.md draws them):

    0  errors                               no falip imports
    0  version, geometry, io                no falip imports but errors
    1  model/, data/                        model never imports data, nor data model
    2  prompts/
    3  encoding/
    4  tasks/
    5  experiments/
    6  sandbox/
    7  cli
    8  falip/__init__.py, falip/pointcloud.py   the public face: imports from below, imported by nobody inside

A module may import its own package (e.g. data/rec/refer.py -> data/rec/types.py) or a strictly
lower layer. The check reads every ``import`` statement (module level and inside functions) with
``ast``; a config's ``_target_`` (the sandbox's generators) is resolved at run time and is not an import.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "falip"
LAYERS = {"falip.version": 0, "falip.errors": -1, "falip.geometry": 0, "falip.io": 0,
          "falip.model": 1, "falip.data": 1, "falip.prompts": 2, "falip.encoding": 3, "falip.tasks": 4,
          "falip.experiments": 5, "falip.sandbox": 6, "falip.cli": 7, "falip.pointcloud": 8, "falip": 8}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit a module belongs to: the longest key of LAYERS that prefixes it."""
    return max((key for key in LAYERS if module == key or module.startswith(key + ".")), key=len)


def falip_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported falip module, line, inside a function?) for every import statement of ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names
                             if alias.name.split(".")[0] == "falip")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] == "falip":
                    # "from . import x" names submodules: count each as imported
                    names = [f"{target}.{a.name}" for a in child.names] if not child.module else [target]
                    found.extend((t, child.lineno, in_function) for t in names)
            visit(child, nested)

    visit(tree, False)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_only_go_down(path):
    source = module_name(path)
    source_unit = unit(source)
    upward = []
    for target, line, in_function in falip_imports(path):
        target_unit = unit(target)
        if target_unit == source_unit:
            continue
        if LAYERS[target_unit] >= LAYERS[source_unit]:
            upward.append(f"line {line}: {source} (layer {LAYERS[source_unit]}) imports {target} "
                          f"(layer {LAYERS[target_unit]})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_falip_import_hides_inside_a_function(path):
    hidden = [f"line {line}: {target}" for target, line, in_function in falip_imports(path) if in_function]
    assert not hidden, f"{path.name} imports falip modules inside functions (a cycle dodged?): {hidden}"


def test_every_module_has_a_layer():
    """Each module's unit is a real layer key; only the package's face (``falip/__init__.py``,
    ``falip/pointcloud.py``) falls back to the catch-all ``falip``."""
    face = {"falip", "falip.pointcloud"}
    fallback = [module_name(path) for path in MODULES
                if unit(module_name(path)) == "falip" and module_name(path) not in face]
    assert not fallback, f"modules without a layer (add them to LAYERS and docs/architecture.md): {fallback}"


# The tower modules: the only ones that may name a backbone's internals. The builders write checkpoints -- the
# sandbox trainer trains an HF CLIPModel (the shipped checkpoint), random_clip assembles random test models --,
# so they know the modules they build by design.
TOWER_MODULES = {"falip.model.hf_clip", "falip.model.hf_siglip", "falip.model.open_clip_tower", "falip.model.timm_tower"}
BUILDERS = {"falip.sandbox.training", "falip.model.random_clip"}
HF_CLIP_NAMES = {"vision_model", "text_model", "visual_projection", "text_projection", "q_proj", "k_proj", "v_proj",
                 "out_proj", "self_attn", "pre_layrnorm", "post_layernorm", "layer_norm1", "layer_norm2",
                 "get_image_features", "get_text_features", "vision_config", "text_config", "encoder",
                 # open_clip's
                 "resblocks", "in_proj_weight", "in_proj_bias", "ln_1", "ln_2", "ln_post", "_embeds", "conv1",
                 # timm's
                 "trunk", "blocks", "attn_pool", "qkv", "q_norm", "k_norm", "norm1", "norm2", "ls1", "ls2",
                 "patch_embed", "_pos_embed", "norm_pre", "fc_norm"}
MODEL_OBJECTS = ("model", "clip", "tower")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_only_the_tower_module_names_a_backbones_internals(path):
    name = module_name(path)
    if name in TOWER_MODULES | BUILDERS:
        return
    named = [f"line {node.lineno}: .{node.attr}" for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in HF_CLIP_NAMES]
    assert not named, f"{name} reaches into HF CLIP's modules (go through falip.model.tower): {named}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_code_sets_attributes_on_a_model_at_run_time(path):
    """Per-call choices (steering, execution plan) are arguments, never model state: no ``model.x = ...``
    anywhere, and the model and tower classes set ``self.x`` in ``__init__`` only. (The sandbox trainer
    edits the HF CLIPModel it is training: it builds checkpoints, it does not evaluate them.)"""
    if module_name(path) in BUILDERS:
        return
    tree = ast.parse(path.read_text())
    offenders = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for leaf in ast.walk(target):
                if (isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name)
                        and any(word in leaf.value.id.lower() for word in MODEL_OBJECTS)):
                    offenders.append(f"line {leaf.lineno}: {leaf.value.id}.{leaf.attr} = ...")
    if module_name(path) in {"falip.model.clip", "falip.model.tower", "falip.model.towers"} | TOWER_MODULES:
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name != "__init__"):
            for node in ast.walk(function):
                if isinstance(node, (ast.Assign, ast.AugAssign)):
                    for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                        if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                                and target.value.id == "self"):
                            offenders.append(f"line {node.lineno}: self.{target.attr} = ... in {function.name}")
    assert not offenders, f"{module_name(path)} sets model state at run time: {offenders}"


def test_tasks_share_the_runners_one_loop():
    """Only the runner drives the encoder over a dataset; tasks neither loop over encodings nor write files."""
    callers = [module_name(path) for path in MODULES if "encode_items(" in path.read_text()
               and not path.name == "regions.py"]
    assert callers == ["falip.experiments.runner"], callers
    for path in (PACKAGE / "tasks").glob("*.py"):
        text = path.read_text()
        assert "open(" not in text and "encode_items" not in text and "tqdm" not in text, path.name
