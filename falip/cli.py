"""``falip-run``: the Hydra entry point. ``falip-run experiment=<name> [key=value ...]``; ``--help`` lists groups."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from .experiments.runner import run_experiment
from .io import cache_root
from .sandbox import MODEL_DIR as SANDBOX_MODEL_DIR


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("falip_sandbox_model"):
        OmegaConf.register_new_resolver("falip_sandbox_model", lambda: str(SANDBOX_MODEL_DIR))
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
    if not OmegaConf.has_resolver("falip_cache"):
        OmegaConf.register_new_resolver("falip_cache", lambda: str(cache_root()))


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    record = run_experiment(config)
    if record is not None:
        table = record.table()
        print(f"\n{config['experiment_name']}: accuracy (%) -- rows: prompts, columns: splits")
        print(table.round(2).to_string(na_rep="-"))
        print(f"\nwrote {record.csv_path} and {record.json_path}")


def compose(overrides: list[str] | None = None) -> dict:
    """The resolved config ``falip-run <overrides>`` would run, as a plain dict (for tests and notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    _register_resolvers()
    with initialize_config_module("falip.configs", version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("config", overrides=list(overrides or [])), resolve=True)


def main() -> None:
    _register_resolvers()
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
