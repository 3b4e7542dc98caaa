"""``falip-run``: the Hydra entry point. ``falip-run experiment=<name> [key=value ...]``; ``--help`` lists groups."""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import FalipError
from .experiments.runner import run_experiment
from .experiments.tables import paper_table, reference_caption
from .io import NO_SPACE, cache_root, configs_dir, docs_dir, output_error
from .sandbox import MODEL_DIR as SANDBOX_MODEL_DIR


def _output_dir(default: str) -> str:
    """``run.output_dir``: ``default`` for a single run; ``<sweep dir>/<job number>`` in a Hydra multirun,
    so that no two jobs of a sweep write the same file."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep = HydraConfig.get().sweep
        return str(Path(sweep.dir) / str(sweep.subdir))
    return default


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("falip_sandbox_model"):
        OmegaConf.register_new_resolver(  # ${falip_sandbox_model:} the sandbox CLIP; ${falip_sandbox_model:siglip} its twin
            "falip_sandbox_model", lambda variant="": str(SANDBOX_MODEL_DIR.parent / f"model_{variant}" if variant
                                                          else SANDBOX_MODEL_DIR))
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
    if not OmegaConf.has_resolver("falip_output_dir"):
        OmegaConf.register_new_resolver("falip_output_dir", _output_dir)
    if not OmegaConf.has_resolver("falip_docs"):  # --help names the docs' folder (a checkout's, or the wheel's)
        OmegaConf.register_new_resolver("falip_docs", lambda: str(docs_dir()))
    if not OmegaConf.has_resolver("falip_cache"):
        OmegaConf.register_new_resolver("falip_cache", lambda: str(cache_root()))


def _fail(message: str, code: int) -> None:
    """Print a user error as one line (no traceback; HYDRA_FULL_ERROR=1 re-raises instead) and exit."""
    first, _, rest = message.partition("\n")
    print(f"falip-run: error: {first}" + (f"\n{rest}" if rest else ""), file=sys.stderr)
    print("(HYDRA_FULL_ERROR=1 shows the traceback; falip-run --help lists the options)", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path="pkg://falip.configs", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        from hydra.core.hydra_config import HydraConfig

        config = OmegaConf.to_container(cfg, resolve=True)
        record = run_experiment(config, overrides=list(HydraConfig.get().overrides.task))
    except (FalipError, OmegaConfBaseException) as error:
        if full_error:
            raise
        _fail(str(error), 2)
    except OSError as error:  # a full disk or a lost folder outside the writers that name their file
        if full_error or error.errno not in NO_SPACE:
            raise
        _fail(str(output_error(error.filename or "a result file", error)), 2)
    except KeyboardInterrupt as error:
        if full_error:
            raise
        _fail(f"interrupted ({error or 'Ctrl-C'}): finished splits and items are kept; rerun the same command "
              f"with run.resume=true to continue", 130)
    if record is not None and record.writer:  # rank 0 of a multi-process run reports for all
        table = record.table()
        print(f"\n{config['experiment_name']}: % -- rows: prompts, columns: splits (and metrics)")
        print(table.round(2).to_string(na_rep="-"))
        if config.get("paper_reference"):
            print(f"\nreference only, not measured here -- {reference_caption(config['paper_reference'])} "
                  f"(falip/paper/{Path(config['paper_reference']).name}; not comparable with other models or data):")
            print(paper_table(config["paper_reference"]).to_string(na_rep="-"))
        written = [record.csv_path, record.json_path, record.extra.get("figure"), record.stable_csv_path,
                   record.stable_json_path]
        print(f"\nwrote {', '.join(str(path) for path in written if path)}"
              + (f"; per-unit predictions under {record.predictions_path('x').parent}"
                 if config["run"].get("save_predictions") else ""))


def compose(overrides: list[str] | None = None) -> dict:
    """The resolved config ``falip-run <overrides>`` would run, as a plain dict (for tests and notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import open_dict

    _register_resolvers()
    with initialize_config_module("falip.configs", version_base="1.3"):
        composed = hydra_compose("config", overrides=list(overrides or []), return_hydra_config=True)
        with open_dict(composed):  # ${hydra:...} needs a running Hydra app: fill in what it would give
            if OmegaConf.is_interpolation(composed, "experiment_name"):
                composed.experiment_name = composed.hydra.runtime.choices.get("experiment")
            del composed["hydra"]
        return OmegaConf.to_container(composed, resolve=True)


# Sections whose keys are a closed set: an unknown key is a typo, never an addition (not even with + or ++).
CLOSED_SECTIONS = ("run", "dataset", "task", "foveal", "report", "analysis")


def _lookup(config: Any, path: list[str]) -> tuple[bool, list[str]]:
    """Whether ``path`` exists in ``config`` (a plain dict), and the keys beside its last part."""
    node = config
    for depth, part in enumerate(path):
        if node is None and depth > 1:  # under a key whose value is null (e.g. dataset.columns): an open mapping
            return True, []
        if not isinstance(node, dict) or part not in node:
            return False, sorted(node) if isinstance(node, dict) else []
        if depth < len(path) - 1:
            node = node[part]
    return True, []


def unknown_key_error(arguments: list[str]) -> str | None:
    """One line for the first ``key=value`` (``+``/``++``/``~`` too) of the command line that names a key the
    composed config does not have under :data:`CLOSED_SECTIONS`, with the nearest valid keys; None if all exist."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    candidates = [a for a in arguments if "=" in a and not a.startswith("-") or a.startswith("~")]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except HydraException:
        return None  # Hydra reports its own syntax errors
    targeted = [o for o in parsed if "/" not in o.key_or_group and o.key_or_group.split(".")[0] in CLOSED_SECTIONS
                and "." in o.key_or_group]
    if not targeted:
        return None
    base = []
    for override in parsed:
        if override in targeted or override.key_or_group.startswith("hydra"):
            continue
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            base.append(f"{override.key_or_group}={first}")
        else:
            base.append(override.input_line)
    try:
        config = compose(base)
    except Exception:  # noqa: BLE001 - a bad group choice etc.: Hydra's own run reports it
        return None
    for override in targeted:
        path = override.key_or_group.split(".")
        exists, siblings = _lookup(config, path)
        if exists:
            continue
        parent = ".".join(path[:-1])
        near = difflib.get_close_matches(path[-1], siblings, n=3, cutoff=0.5)
        hint = (f"did you mean {' or '.join(parent + '.' + k for k in near)}? " if near else "")
        return (f"{override.key_or_group} is not a key of this experiment's {path[0]} section: {hint}"
                f"valid keys of {parent}: {', '.join(siblings)} (adding keys with + is refused there: they would be "
                f"ignored)")
    return None




def _description(path: Path) -> str:
    """The experiment file's first comment line (after Hydra's ``@package`` line)."""
    for line in path.read_text().splitlines():
        text = line.lstrip("#").strip()
        if line.startswith("#") and text and not text.startswith("@package"):
            return text
    return ""


def _needs(config: dict) -> str:
    """What an experiment needs before it runs, read from its composed config."""
    if config.get("report"):
        return "finished runs (run the experiments it combines first)"
    dataset, model, needs = config.get("dataset") or {}, config.get("model") or {}, []
    if dataset.get("format") == "regions":
        needs.append("regions=<file> and classes= or texts=")
    elif not dataset.get("generator") and not dataset.get("root") and "image" not in config:
        needs.append("dataset.root=<dir> (docs/datasets.md)")
    if dataset.get("require_detections") and not dataset.get("detections"):
        needs.append("dataset.detections=<ReCLIP's *_dets_dict.json>")
    if model.get("name") != "falip-sandbox" and not model.get("path"):
        needs.append(f"the checkpoint {model.get('name')} (HF cache or model.path=)")
    return "; ".join(needs) or "nothing (offline: the sandbox model and generated data or an example image)"


def list_experiments() -> list[tuple[str, str, str]]:
    """(name, one-line description, what it needs) of every shipped experiment config."""
    rows = []
    for path in sorted((configs_dir() / "experiment").glob("*.yaml")):
        overrides = [f"experiment={path.stem}"] + (["sweep_dir=."] if "sweep_dir: ???" in path.read_text() else [])
        rows.append((path.stem, _description(path), _needs(compose(overrides))))
    return rows


def main() -> None:
    _register_resolvers()
    if "--list" in sys.argv[1:]:
        for name, description, needs in list_experiments():
            print(f"{name}\n    {description}\n    needs: {needs}")
        print("\nrun one: falip-run experiment=<name> [key=value ...]; docs/experiments.md has each in detail")
        return
    problem = unknown_key_error(sys.argv[1:])
    if problem:
        _fail(problem, 2)
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
