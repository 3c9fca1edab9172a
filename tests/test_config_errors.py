"""Library errors speak the library's language: a bad config value raises a ``ValueError``
(:class:`ConfigError`) whose message and ``field`` name the dataclass field, never a CLI flag."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

from onepixel.attack.config import AttackConfig, CampaignConfig
from onepixel.audit.config import AuditConfig
from onepixel.confmap.config import ConfmapConfig
from onepixel.datasets.tiles import TileConfig
from onepixel.datasets.tupac import TupacConfig
from onepixel.errors import ConfigError
from onepixel.models.options import ModelOptions
from onepixel.optimize.de import DEConfig
from onepixel.pareto.config import ParetoConfig
from onepixel.robustness.config import RobustnessConfig
from onepixel.scaleout.config import ExecutorConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "onepixel"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

#: (config class, the bad keyword arguments, the field the error must name)
BAD_VALUES = [
    (AttackConfig, {"pixels": 0}, "AttackConfig.pixels"),
    (AttackConfig, {"pixels": 2.5}, "AttackConfig.pixels"),
    (AttackConfig, {"success_threshold": 1.5}, "AttackConfig.success_threshold"),
    (AttackConfig, {"max_colour_diff": 2.0}, "AttackConfig.max_colour_diff"),
    (AttackConfig, {"method": "nope"}, "AttackConfig.method"),
    (AttackConfig, {"max_queries": 100}, "AttackConfig.max_queries"),  # only for method="scan"
    (AttackConfig, {"method": "scan", "pixels": 3}, "AttackConfig.pixels"),
    (CampaignConfig, {"dataset": "d", "out": "o", "evaluator": "fast"}, "CampaignConfig.evaluator"),
    (CampaignConfig, {"dataset": "d", "out": "o", "batch_images": 0}, "CampaignConfig.batch_images"),
    (CampaignConfig, {"dataset": "d", "out": "o", "limit": 0}, "CampaignConfig.limit"),
    (CampaignConfig, {"dataset": "d", "out": "o", "classes": ("a",)}, "CampaignConfig.classes"),
    (CampaignConfig, {"dataset": "d", "out": "o", "classes": ("a", "b"), "target": "c"},
     "CampaignConfig.target"),
    (DEConfig, {"population": 2}, "DEConfig.population"),
    (ConfmapConfig, {"step": 0}, "ConfmapConfig.step"),
    (ConfmapConfig, {"evaluator": "fast"}, "ConfmapConfig.evaluator"),
    (ConfmapConfig, {"batch_size": 0}, "ConfmapConfig.batch_size"),
    (ConfmapConfig, {"workers": 0}, "ConfmapConfig.workers"),
    (ConfmapConfig, {"checkpoint_seconds": 0}, "ConfmapConfig.checkpoint_seconds"),
    (ConfmapConfig, {"pixels": ()}, "ConfmapConfig.pixels"),
    (ParetoConfig, {"population": 3}, "ParetoConfig.population"),
    (ParetoConfig, {"generations": 0}, "ParetoConfig.generations"),
    (ParetoConfig, {"success_threshold": -0.1}, "ParetoConfig.success_threshold"),
    (AuditConfig, {"step": 300}, "AuditConfig.step"),
    (AuditConfig, {"top": -1}, "AuditConfig.top"),
    (AuditConfig, {"selection": "some"}, "AuditConfig.selection"),
    (RobustnessConfig, {"dataset": "d", "out": "o", "defences": ("median3", "median3")},
     "RobustnessConfig.defences"),
    (RobustnessConfig, {"dataset": "d", "out": "o", "defences": ("nope",)}, "RobustnessConfig.defences"),
    (ExecutorConfig, {"kind": "spark"}, "ExecutorConfig.kind"),
    (ExecutorConfig, {"kind": "ray", "workers": 0}, "ExecutorConfig.workers"),
    (ExecutorConfig, {"kind": "ray", "address": "nowhere"}, "ExecutorConfig.address"),
    (ModelOptions, {"engine": "tf"}, "ModelOptions.engine"),
    (ModelOptions, {"device": "tpu"}, "ModelOptions.device"),
    (ModelOptions, {"threads": 0}, "ModelOptions.threads"),
    (TileConfig, {"size": 0}, "TileConfig.size"),
    (TileConfig, {"tissue_threshold": 2.0}, "TileConfig.tissue_threshold"),
    (TupacConfig, {"patch_size": 1}, "TupacConfig.patch_size"),
    (TupacConfig, {"shifts": 10_000}, "TupacConfig.shifts"),
]


@pytest.mark.parametrize(("cls", "kwargs", "field"), BAD_VALUES,
                         ids=[f"{c.__name__}-{'-'.join(k)}" for c, k, _ in BAD_VALUES])
def test_bad_config_value_names_its_field_not_a_flag(cls, kwargs, field):
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    exc = err.value
    assert isinstance(exc, ConfigError)
    assert exc.field == field
    assert field in str(exc)
    assert not FLAG.search(str(exc)), f"{cls.__name__} names a command-line flag: {exc}"


def test_field_survives_pickling():
    # Ray workers send errors back pickled; the CLI maps .field to its flag afterwards.
    with pytest.raises(ConfigError) as err:
        AttackConfig(pixels=0)
    back = pickle.loads(pickle.dumps(err.value))
    assert type(back) is ConfigError and back.field == "AttackConfig.pixels"
    assert str(back) == str(err.value)


#: Flags of other programs that a message may quote (``ray start --head``).
OTHER_PROGRAMS_FLAGS = {"--head"}


def _raised_flags() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if "cli" in path.relative_to(SRC).parts:
            continue  # the CLI speaks in flags
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and node.exc is not None):
                continue
            texts = [c.value for c in ast.walk(node.exc) if isinstance(c, ast.Constant)
                     and isinstance(c.value, str)]
            flags = {f for t in texts for f in FLAG.findall(t)} - OTHER_PROGRAMS_FLAGS
            if flags:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {', '.join(sorted(flags))}")
    return found


def test_no_library_error_names_a_cli_flag():
    assert _raised_flags() == []


def test_the_static_check_catches_a_flag(tmp_path, monkeypatch):
    # The check must be able to fail: a module raising with a flag in an f-string is found.
    pkg = tmp_path / "onepixel"
    pkg.mkdir()
    (pkg / "bad.py").write_text('def f(n):\n    raise ValueError(f"--pixels must be >= 1, got {n}")\n')
    monkeypatch.setattr(f"{__name__}.SRC", pkg)
    assert _raised_flags() == ["bad.py:2: --pixels"]
