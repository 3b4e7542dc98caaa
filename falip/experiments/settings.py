"""The ``run`` section, read once: its schema (every key's type and range, checked before anything loads)
and :class:`RunSettings`, the typed value the runner passes on instead of reading the dict again.

Unknown keys are refused before Hydra runs (``falip.cli``); this catches wrong values
(``run.batch_size=abc``, ``run.num_workers=-1``) with one line naming the key, the value and the fix.
The defaults are stated in ``configs/config.yaml``; :class:`RunSettings` takes every value from the
composed config (``tests/experiments/test_configs.py`` checks that the two name the same keys).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from ..model.clip import DTYPES


def _integer(minimum: int | None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


# key -> (check, what a valid value is)
RUN_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (_integer(None), "an integer"),
    "device": (_text, "auto, cpu, cuda or cuda:<n>"),
    "dtype": (lambda v: str(v).lower() in DTYPES, f"one of {sorted(DTYPES)}"),
    "batch_size": (_integer(1), "an integer >= 1"),
    "num_workers": (_integer(0), "an integer >= 0"),
    "prefetch_images": (_integer(1), "an integer >= 1"),
    "limit": (lambda v: v is None or _integer(1)(v), "null or an integer >= 1"),
    "skip_bad_samples": (_boolean, "true or false"),
    "resume": (_boolean, "true or false"),
    "save_predictions": (_boolean, "true or false"),
    "output_dir": (_text, "a folder path"),
    "name": (lambda v: v is None or (_text(v) and "/" not in v and v not in (".", "..")),
             "null (a time-stamped folder per run) or a folder name"),
    "progress": (_boolean, "true or false"),
    "trims": (_boolean, "true or false"),
    "cls_stream": (_boolean, "true or false"),
    "threads": (lambda v: v is None or _integer(1)(v), "null (torch's choice) or an integer >= 1"),
}


def check_run_settings(run: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first ``run.<key>`` whose value does not fit :data:`RUN_SCHEMA`, or
    for a device this machine does not have."""
    for key, (valid, expected) in RUN_SCHEMA.items():
        if key in run and not valid(run[key]):
            raise ConfigError(f"run.{key}={run[key]!r} is not valid: expected {expected} "
                              f"(e.g. falip-run run.{key}=<value>)")
    check_device(str(run.get("device", "auto")))


def check_device(device: str) -> None:
    """A ``cuda`` / ``cuda:<n>`` device must exist here (one line, not torch's traceback mid-run)."""
    import torch

    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"run.device={device} but this machine has no CUDA device (torch {torch.__version__}, "
                          f"CUDA build: {torch.version.cuda or 'none'}): use run.device=cpu or run.device=auto")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ConfigError(f"run.device={device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")


@dataclass(frozen=True)
class RunSettings:
    """The ``run`` section as one typed value (see ``configs/config.yaml`` for each key's meaning)."""

    seed: int
    device: str
    dtype: str
    batch_size: int
    num_workers: int
    prefetch_images: int
    limit: int | None
    skip_bad_samples: bool
    resume: bool
    save_predictions: bool
    output_dir: str
    name: str | None
    progress: bool
    trims: bool
    cls_stream: bool
    threads: int | None

    def apply_threads(self) -> None:
        """``run.threads``: the CPU threads torch's operators use in this process (``None``: torch's choice)."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)

    @classmethod
    def from_config(cls, run: Mapping[str, Any]) -> "RunSettings":
        """Check ``run`` (:func:`check_run_settings`) and read it once; a key the section lacks is an error."""
        check_run_settings(run)
        missing = [f.name for f in fields(cls) if f.name not in run]
        if missing:
            raise ConfigError(f"the run section lacks {missing} (compose the config with falip.cli.compose or falip-run)")
        return cls(**{f.name: run[f.name] for f in fields(cls)})
