"""The options several commands share, declared once: a command gets the vocabulary by calling
these functions (``-o/--out``, ``--no-progress``, ``--seed``, the model and DE options, ...).

Each option that fills a config dataclass field is declared with ``field=(Class, "name")``: its
default is read from the dataclass (a default is written once), and the parsed action carries
``action.field == "Class.name"``, which :func:`field_flags` turns into the table ``main()``
uses to show a library error that names a field (``AttackConfig.pixels``) with the command's
flag (``--pixels``) instead.

Only light modules are imported here and by the ``add_arguments`` of every command (no torch,
no web framework), so ``onepixel --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

#: Option strings that are part of the shared vocabulary: where a command has one, it must come
#: from the declaration here (``action.shared`` names it). Checked by tests/test_cli_vocabulary.py.
SHARED = ("--out", "--no-progress", "--seed", "--model", "--device", "--engine", "--dtype",
          "--batch-size", "--model-output", "--preprocess", "--layout", "--positive-index",
          "--defence", "--executor", "--ray-address", "--workers", "--cpus-per-worker",
          "--gpus-per-worker", "--popsize", "--maxiter", "--positive-label", "--negative-label",
          "--limit", "--classes", "--target", "--evaluator", "--images", "--overwrite")


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` of ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")


def has_field(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


def add(container: Any, *flags: str, field: tuple[type, str] | None = None,
        shared: str | None = None, **kwargs: Any) -> argparse.Action:
    """``container.add_argument(*flags, **kwargs)``, the default read from ``field`` (unless
    given), and the action tagged with the field it fills and the shared declaration it is."""
    if field is not None:
        kwargs.setdefault("default", field_default(*field))
    action = container.add_argument(*flags, **kwargs)
    action.field = f"{field[0].__name__}.{field[1]}" if field else None  # type: ignore[attr-defined]
    action.shared = shared  # type: ignore[attr-defined]
    return action


class _Deprecated(argparse.Action):
    """An old spelling: stores into the new option's ``dest`` (values converted by ``rename``)
    and says on stderr which spelling replaces it."""

    def __init__(self, option_strings, dest, new: str = "", rename: Mapping[str, str] | None = None,
                 **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.rename = new, dict(rename or {})

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.rename.get(values, values) if isinstance(values, str) else values
        shown = f"{self.new} {value}" if self.rename else self.new
        sys.stderr.write(f"onepixel: warning: {option_string} is deprecated and goes in the next "
                         f"release; use {shown}\n")
        setattr(namespace, self.dest, value)


def deprecated(container: Any, old: str, new: argparse.Action,
               rename: Mapping[str, str] | None = None, **kwargs: Any) -> argparse.Action:
    """Keep ``old`` working for one release as a hidden alias of the option ``new``."""
    flag = max(new.option_strings, key=len)
    kwargs.setdefault("type", new.type)
    kwargs.setdefault("choices", None if rename else new.choices)
    action = container.add_argument(old, action=_Deprecated, dest=new.dest, new=flag, rename=rename,
                                    default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                                    metavar=new.metavar, **kwargs)
    action.field, action.shared, action.deprecated = None, None, flag  # type: ignore[attr-defined]
    return action


def field_flags(*parsers: argparse.ArgumentParser) -> dict[str, str]:
    """``{"Class.field": "--flag"}`` for the options of ``parsers`` that fill a field."""
    flags: dict[str, str] = {}
    for parser in parsers:
        for action in parser._actions:
            name = getattr(action, "field", None)
            if name and action.option_strings:
                flags.setdefault(name, max(action.option_strings, key=len))
    return flags


# --------------------------------------------------------------------------- parsing helpers


def name_list(text: str) -> tuple[str, ...]:
    """``NAME,NAME,...``: the names, spaces around each dropped, empty ones ignored."""
    return tuple(c.strip() for c in text.split(",") if c.strip())


def mutation(text: str) -> float | tuple[float, float]:
    """``--mutation``: one factor, or ``MIN,MAX`` for dithering."""
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or MIN,MAX, got {text!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise argparse.ArgumentTypeError(f"expected a number or MIN,MAX, got {text!r}")


# --------------------------------------------------------------------------- output and progress


def output_group(parser: argparse.ArgumentParser) -> Any:
    return parser.add_argument_group("output")


def add_out(group: Any, *, metavar: str, help: str, required: bool = False,
            default: Any = None) -> argparse.Action:
    """``-o/--out``: where the command writes its files."""
    return add(group, "-o", "--out", metavar=metavar, required=required, default=default, help=help,
               shared="out")


def add_progress(group: Any) -> argparse.Action:
    """``--no-progress``: no progress bar (shown on stderr otherwise)."""
    return add(group, "--no-progress", action="store_true",
               help="no progress bar (default: one on stderr)", shared="progress")


def add_overwrite(group: Any) -> argparse.Action:
    return add(group, "--overwrite", action="store_true", help="replace a non-empty --out folder",
               shared="overwrite")


def add_seed(group: Any, cls: type, name: str = "seed", what: str = "") -> argparse.Action:
    return add(group, "--seed", type=int, field=(cls, name), shared="seed",
               help=f"random seed{what} (default: %(default)s)")


# --------------------------------------------------------------------------- model


def add_model_options(parser: argparse.ArgumentParser, *, defence: bool = True,
                      model_default: Any = "builtin", model_help: str = "") -> None:
    """The model group. ``model_default=None`` where the model defaults to a RUN's own;
    ``defence=False`` where the command cannot score through a defence chain."""
    from onepixel.models.options import BUILTIN, ENGINES, ModelOptions

    g = parser.add_argument_group("model (docs/models.md)")
    add(g, "--model", default=BUILTIN if model_default == "builtin" else model_default,
        shared="model",
        help=model_help or f"{BUILTIN} (built-in), *.h5/*.hdf5 (Keras), *.onnx, *.pt/*.ts "
                           "(TorchScript), http://HOST:PORT (a MAX-API service), "
                           "http://HOST:PORT/v2/models/NAME (an Open Inference Protocol server: "
                           "Triton, KServe, MLServer, onepixel serve --protocol v2); key from "
                           "$ONEPIXEL_API_KEY; default: %(default)s")
    add(g, "--device", field=(ModelOptions, "device"), shared="model",
        help="auto, cpu or cuda[:N] (default: %(default)s)")
    add(g, "--engine", field=(ModelOptions, "engine"), choices=ENGINES, shared="model",
        help="engine for Keras/built-in models; auto = ONNX Runtime on CPU, torch on CUDA")
    add(g, "--dtype", field=(ModelOptions, "dtype"), shared="model",
        help="torch compute dtype: float32, bfloat16, float16 (default: %(default)s)")
    add(g, "--batch-size", type=int, field=(ModelOptions, "batch_size"), shared="model",
        help="images per model call (default: 32 on CPU, 2048 on CUDA)")
    out = add(g, "--model-output", choices=["logit", "probability"],
              field=(ModelOptions, "model_output"), shared="model",
              help="what the model returns (default: read from the model file where the format "
                   "says, else logit; docs/models.md)")
    deprecated(g, "--output", out)
    add(g, "--preprocess", choices=["max", "unit", "raw"], field=(ModelOptions, "preprocess"),
        shared="model", help="input scaling: max=(x/255-0.5)*2, unit=x/255, raw=x")
    add(g, "--layout", choices=["nhwc", "nchw"], field=(ModelOptions, "layout"), shared="model",
        help="input tensor layout")
    add(g, "--positive-index", type=int, field=(ModelOptions, "positive_index"), shared="model",
        help="output column of the positive class, to score a multi-class model as binary")
    add(g, "--input-shape", type=input_shape, field=(ModelOptions, "input_shape"), metavar="HxWxC",
        shared="model", help="input size of a model that does not declare one (TorchScript "
                             "without input_shape, HTTP); default: the images' own size")
    if defence:
        add(g, "--defence", default=None, metavar="NAME[:ARG][,NAME...]", shared="model",
            help="score through this chain of defences, applied left to right: median3, "
                 "median5, blur:SIGMA, repair[:H], jpeg:Q, bits:N (docs/defences.md)")


def input_shape(text: str) -> tuple[int, int, int]:
    """``--input-shape HxWxC``, e.g. ``32x32x3`` (C 1 or 3)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(v.isdigit() and int(v) > 0 for v in parts) or parts[2] not in ("1", "3"):
        raise argparse.ArgumentTypeError(f"expected HxWxC, e.g. 32x32x3 (C 1 or 3), got {text!r}")
    return tuple(int(v) for v in parts)  # type: ignore[return-value]


def model_options(args: argparse.Namespace):
    from onepixel.models.options import ModelOptions

    return ModelOptions(device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                        engine=args.engine, model_output=args.model_output,
                        preprocess=args.preprocess, layout=args.layout,
                        positive_index=args.positive_index, assets_dir=args.assets,
                        input_shape=args.input_shape)


# --------------------------------------------------------------------------- scale-out


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    from onepixel.scaleout.config import EXECUTORS, ExecutorConfig

    g = parser.add_argument_group("scale-out (docs/scale-out.md)")
    add(g, "--executor", choices=EXECUTORS, field=(ExecutorConfig, "kind"), shared="executor",
        help="local: this process; ray: actors on a Ray runtime (pip install 'onepixel[ray]'); "
             "default: %(default)s")
    add(g, "--ray-address", field=(ExecutorConfig, "address"), metavar="ADDRESS", shared="executor",
        help="none: start a local Ray runtime; auto: the running cluster; ray://HOST:PORT: a "
             "remote one")
    add(g, "--workers", type=int, field=(ExecutorConfig, "workers"), shared="executor",
        help="Ray actors, each holding the model (default: one per CPU, or per --gpus-per-worker "
             "GPUs)")
    add(g, "--cpus-per-worker", type=int, field=(ExecutorConfig, "cpus_per_worker"),
        shared="executor", help="CPUs (model threads) per actor (default: %(default)s)")
    add(g, "--gpus-per-worker", type=float, field=(ExecutorConfig, "gpus_per_worker"),
        shared="executor", help="GPUs per actor, e.g. 1 or 0.5 (default: %(default)s: CPU actors)")


def executor_config(args: argparse.Namespace):
    from onepixel.scaleout.config import ExecutorConfig

    return ExecutorConfig(kind=args.executor, address=args.ray_address, workers=args.workers,
                          cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker)


# --------------------------------------------------------------------------- search and dataset


def add_search_size(group: Any, population: tuple[type, str], generations: tuple[type, str],
                    what: str = "") -> tuple[argparse.Action, argparse.Action]:
    """``--popsize`` / ``--maxiter``: the population in total and the generations of an
    evolutionary search (DE, or NSGA-II with ``what``)."""
    pop = add(group, "--popsize", type=int, field=population, shared="search",
              help=f"{what}population size in total (default: %(default)s)")
    gens = add(group, "--maxiter", type=int, field=generations, shared="search",
               help=f"{what}maximum generations (default: %(default)s)")
    return pop, gens


def add_de_options(parser: argparse.ArgumentParser, *, full: bool = True,
                   title: str = "differential evolution (defaults: the papers')") -> Any:
    """The DE group: ``--popsize``, ``--maxiter``, ``--seed`` and, with ``full``, the rest of
    :class:`~onepixel.optimize.de.DEConfig`."""
    from onepixel.optimize.de import INITS, STRATEGIES, DEConfig

    g = parser.add_argument_group(title)
    add_search_size(g, (DEConfig, "population"), (DEConfig, "maxiter"))
    add_seed(g, DEConfig)
    if not full:
        return g
    add(g, "--mutation", type=mutation, field=(DEConfig, "mutation"), metavar="F|MIN,MAX",
        help="mutation factor F, or MIN,MAX for dithering: F drawn in [MIN, MAX) each generation "
             "(default: %(default)s)")
    add(g, "--strategy", choices=STRATEGIES, field=(DEConfig, "strategy"),
        help="DE strategy, as scipy's (default: %(default)s)")
    add(g, "--init", choices=INITS, field=(DEConfig, "init"),
        help="initial population, as scipy's (default: %(default)s)")
    add(g, "--recombination", type=float, field=(DEConfig, "recombination"),
        help="crossover probability CR (default: %(default)s)")
    add(g, "--tol", type=float, field=(DEConfig, "tol"),
        help="relative convergence tolerance (default: %(default)s)")
    add(g, "--atol", type=float, field=(DEConfig, "atol"),
        help="absolute convergence tolerance (default: %(default)s)")
    add(g, "--updating", choices=["immediate", "deferred"], field=(DEConfig, "updating"),
        help="scipy's updating mode (immediate is scipy's default and the papers')")
    return g


def de_config(args: argparse.Namespace, full: bool = True):
    from onepixel.optimize.de import DEConfig

    if not full:
        return DEConfig(population=args.popsize, maxiter=args.maxiter, seed=args.seed)
    return DEConfig(population=args.popsize, maxiter=args.maxiter, mutation=args.mutation,
                    recombination=args.recombination, tol=args.tol, atol=args.atol,
                    updating=args.updating, seed=args.seed, strategy=args.strategy, init=args.init)


def add_labels(group: Any) -> None:
    """``--positive-label`` / ``--negative-label``: a binary dataset's two folder names."""
    from onepixel.attack.config import CampaignConfig

    add(group, "--positive-label", field=(CampaignConfig, "positive_label"), shared="labels",
        help="folder name of positives (default: %(default)s)")
    add(group, "--negative-label", field=(CampaignConfig, "negative_label"), shared="labels",
        help="folder name of negatives (default: %(default)s)")


def add_limit(group: Any, cls: type | None = None) -> argparse.Action:
    if cls is None:
        from onepixel.attack.config import CampaignConfig as cls  # noqa: N813
    return add(group, "--limit", type=int, field=(cls, "limit"), shared="limit",
               help="only the first N images of the dataset (sorted)")


def add_classes(group: Any, *, target: bool = True, default_help: str = "the dataset's class "
                "folder names, sorted") -> None:
    """``--classes`` (and ``--target``) for K-class models."""
    add(group, "--classes", type=name_list, default=None, metavar="NAME,NAME,...", shared="classes",
        help=f"K-class models: class names in the model's output order (default: {default_help})")
    if target:
        add(group, "--target", default=None, metavar="CLASS", shared="classes",
            help="K-class models: attack towards this class (targeted); default: untargeted, "
                 "away from the true class")


def add_evaluator(group: Any, field: tuple[type, str] | None = None, default: str = "auto",
                  help: str = "") -> argparse.Action:
    """``--evaluator auto|incremental|full``: the whole network per candidate, or only what
    one pixel changes (Keras/built-in models)."""
    from onepixel.scoring.options import EVALUATORS

    kwargs: dict[str, Any] = {"field": field} if field else {"default": default}
    return add(group, "--evaluator", choices=EVALUATORS, shared="evaluator", **kwargs,
               help=help or "how candidates are scored: incremental recomputes only what the "
                            "pixel changes (Keras/built-in models), full runs the whole network; "
                            "default: %(default)s")


def add_run_images(group: Any, help: str) -> argparse.Action:
    return add(group, "--images", nargs="+", metavar="NAME", default=None, shared="images",
               help=help)

