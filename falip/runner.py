"""Run one experiment from its resolved config: model + prompts + task -> table + sidecar."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from .experiment import ExperimentRecord, load_model
from .prompts import prompts_from_config


def _rec(config, model, prompts, record):
    from .tasks.rec import run_rec_experiment

    run_rec_experiment(config, model, prompts, record)


def _check_rec(config):
    from .sources import check_rec_dataset

    check_rec_dataset(config["dataset"])


def _classification(config, model, prompts, record):
    from .tasks.classification import run_classification_experiment

    run_classification_experiment(config, model, prompts, record)


# task.name -> runner(config, model, prompts, record); "table" tasks combine finished results instead.
TASKS: dict[str, Callable] = {"rec": _rec, "classification": _classification}
# task.name -> check(config), run before the model loads so a missing dataset is reported at once.
PREFLIGHTS: dict[str, Callable] = {"rec": _check_rec}


def run_experiment(config: Mapping[str, Any]) -> ExperimentRecord | None:
    """Run ``config`` (a plain dict: the resolved Hydra config) and return its record."""
    config = dict(config)
    task = config["task"]["name"]
    if task == "table":
        from .tasks.table import build_table

        build_table(config)
        return None
    if task not in TASKS:
        raise ValueError(f"unknown task.name {task!r}; known: {sorted(TASKS) + ['table']}")
    torch.manual_seed(int(config["run"].get("seed", 0)))
    prompts = prompts_from_config(config.get("prompts") or {})
    if not prompts:
        raise ValueError("the experiment has no prompts: set prompts=<group> or prompts.<name>={...}")
    if task in PREFLIGHTS:
        PREFLIGHTS[task](config)
    model = load_model(config["model"], config["run"])
    record = ExperimentRecord(config["experiment_name"], config, config["run"]["output_dir"],
                              [prompt.name for prompt in prompts], model, resume=bool(config["run"].get("resume")))
    try:
        with torch.inference_mode():
            TASKS[task](config, model, prompts, record)
    except BaseException as error:
        record.fail(error)
        raise
    record.finish()
    return record
