"""Every shipped experiment composes, and its prompts build: a broken config is caught before a long run."""
from pathlib import Path

import pytest

from falip.cli import compose
from falip.prompts import prompts_from_config

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[2] / "configs" / "experiment").glob("*.yaml"))


def test_every_experiment_file_is_listed():
    assert {"shapes_rec", "shapes_cls", "shapes_ablation", "refcoco_rec", "refcocop_rec", "refcocog_rec",
            "rec_table"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds_its_prompts(name):
    config = compose([f"experiment={name}"])
    assert config["experiment_name"] == name
    if config["task"]["name"] == "table":
        assert config["task"]["columns"], "a table task combines finished runs"
        return
    prompts = prompts_from_config(config["prompts"], foveal=config["foveal"])
    assert prompts and len({p.name for p in prompts}) == len(prompts)
    assert all(p.bias is None or getattr(p.bias, "alpha", 1) > 0 for p in prompts)


def test_default_run_is_the_sandbox_rec_experiment():
    config = compose([])
    assert config["experiment_name"] == "shapes_rec" and config["model"]["name"] == "falip-sandbox"


def test_the_run_section_and_its_schema_name_the_same_keys():
    """Every run.<key> of configs/config.yaml is checked and typed (RUN_SCHEMA, RunSettings), and nothing else."""
    from dataclasses import fields

    from falip.cli import compose
    from falip.experiments.settings import RUN_SCHEMA, RunSettings

    run = compose([])["run"]
    assert set(run) == set(RUN_SCHEMA) == {f.name for f in fields(RunSettings)}
    settings = RunSettings.from_config(run)
    assert settings.batch_size == run["batch_size"] and settings.trims is True and settings.cls_stream is False


def test_every_model_of_the_backbone_study_composes_with_its_alpha_and_tuned_marker():
    """The backbone study's sweep (CLIP, MetaCLIP 2 and the probe-pooled SigLIPs) composes offline, each model
    config naming its alpha and whether it was tuned for it (the table marks untuned ones)."""
    import yaml

    study = yaml.safe_load((Path(__file__).parents[2] / "configs" / "experiment" / "backbones.yaml").read_text())
    models = study["hydra"]["sweeper"]["params"]["model"].split(",")
    assert {"siglip_b16", "siglip2_b16", "metaclip2_b16", "clip_vit_b16", "dfn_b16", "datacomp_b16"} <= set(models)
    for model in models:
        config = compose(["experiment=backbones", f"model={model}"])
        assert config["foveal"]["alpha"] == config["model"]["foveal_alpha"] == 0.2
        assert config["model"]["foveal_alpha_tuned"] is (model == "clip_vit_b16"), model
        prompts = prompts_from_config(config["prompts"], foveal=config["foveal"])
        assert [p.name for p in prompts] == ["Original CLIP", "RedCircle", "FALIP"]
        if config["model"]["name"].startswith("open_clip:"):  # an architecture and its weights' tag
            assert config["model"]["pretrained"] and config["model"]["path"] is None


def test_run_threads_sets_torchs_cpu_threads_and_leaves_the_config_hash_alone():
    import torch

    from falip.errors import ConfigError
    from falip.experiments.record import config_hash
    from falip.experiments.settings import RunSettings

    config = compose(["run.threads=1"])
    original = torch.get_num_threads()
    try:
        RunSettings.from_config(config["run"]).apply_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(original)
    assert config_hash(config) == config_hash(compose([]))  # how a run goes, not what it computes
    with pytest.raises(ConfigError, match=r"run.threads=0 is not valid: expected null \(torch's choice\)"):
        RunSettings.from_config(compose(["run.threads=0"])["run"])
