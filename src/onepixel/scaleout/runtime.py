"""Connecting to Ray: the optional import, the runtime, and shipping a model to workers."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import onepixel.assets as assets
from onepixel.errors import OnepixelError, ScaleOutError
from onepixel.models.options import BUILTIN, ModelOptions
from onepixel.scaleout.config import ExecutorConfig

log = logging.getLogger(__name__)


def require_ray() -> ModuleType:
    """Import Ray, or say how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ScaleOutError("the Ray executor needs Ray: pip install 'onepixel[ray]' (or "
                            "'onepixel[all]'), on this machine and on every worker") from exc
    return ray


def connect(config: ExecutorConfig) -> bool:
    """Join (or start) the Ray runtime ``config.address`` names.

    Returns
    -------
    bool
        True when this call started or joined it (the caller shuts it down when done), False
        when Ray was already initialised in this process (then it is left as it is).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k == assets.ENV_ASSETS}
    kwargs = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False,
              "runtime_env": {"env_vars": env} if env else None}
    try:
        if config.address is None:
            # A local runtime sized to this machine (Ray's default), started and stopped by us.
            ray.init(**kwargs)
        else:
            ray.init(address=config.address, **kwargs)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
        where = config.address or "a local runtime"
        raise ScaleOutError(f"cannot start or reach Ray at {where}: {exc}. Start a cluster with "
                            "`ray start --head` (see docs/scale-out.md), or leave ExecutorConfig.address "
                            "None to start a local runtime") from exc
    log.info("Ray: %s", {k: v for k, v in ray.cluster_resources().items()
                         if k in ("CPU", "GPU", "memory")})
    return True


def worker_count(config: ExecutorConfig) -> int:
    """The actors to start: ``config.workers``, else as many as the cluster's resources hold."""
    ray = require_ray()
    resources = ray.cluster_resources()
    if config.gpus_per_worker:
        gpus = resources.get("GPU", 0)
        if gpus < config.gpus_per_worker:
            raise ScaleOutError(f"ExecutorConfig.gpus_per_worker is {config.gpus_per_worker} but the "
                                f"Ray cluster "
                                f"has {gpus:g} GPUs")
        fit = int(gpus // config.gpus_per_worker)
    else:
        fit = int(resources.get("CPU", 1) // config.cpus_per_worker)
    if config.workers is None:
        return max(1, fit)
    if config.workers > max(fit, 1):
        log.warning("%d workers asked for, the cluster holds %d at once now: the rest wait for "
                    "resources (an autoscaling cluster adds nodes)", config.workers, fit)
    return config.workers


@dataclass(frozen=True)
class ModelPayload:
    """A model as the workers get it: a spec they can resolve, or the file's bytes.

    Workers need no shared file system and no copy of the assets: a model file (and the
    built-in model's weights) travels as bytes through Ray's object store; an HTTP model is a
    URL every worker calls.
    """

    spec: str
    filename: str = ""
    data: bytes = b""
    asset_relpath: str = ""

    @classmethod
    def of(cls, spec: str, options: ModelOptions) -> ModelPayload:
        if spec.startswith(("http://", "https://")):
            return cls(spec)
        if spec == BUILTIN:
            path = assets.ensure(BUILTIN, options.assets_dir)
            return cls(spec, path.name, path.read_bytes(),
                       str(assets.lookup(BUILTIN).relpath.as_posix()))
        path = Path(spec)
        if not path.is_file():
            raise OnepixelError(f"model file not found: {path}")
        return cls(spec, path.name, path.read_bytes())

    @contextmanager
    def materialised(self, options: ModelOptions) -> Iterator[tuple[str, ModelOptions]]:
        """Write the bytes into a private folder; yield the spec and options to load them with.

        The folder is removed on exit: load the model inside the ``with`` block. Every backend
        reads its file once, at load (weights into torch, the ONNX graph into its session), and
        a worker restarted many times must not leave a copy of the model behind each time.
        """
        if not self.data:
            yield self.spec, options
            return
        folder = Path(tempfile.mkdtemp(prefix="onepixel-model-"))
        try:
            if self.asset_relpath:
                target = folder / self.asset_relpath
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.data)
                # The built-in model found where its asset lives: same name, same checksum.
                yield self.spec, replace(options, assets_dir=str(folder))
            else:
                target = folder / self.filename
                target.write_bytes(self.data)
                yield str(target), options
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def actor_class(cls: type, config: ExecutorConfig):
    """``cls`` as a Ray actor class with the worker's resources and restart policy: an actor
    that dies is restarted and its unfinished call re-run, ``config.max_retries`` times."""
    ray = require_ray()
    return ray.remote(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
                      max_restarts=config.max_retries, max_task_retries=config.max_retries)(cls)


def release(actors: list, started: bool) -> None:
    """Stop ``actors``, and the Ray runtime when :func:`connect` started it."""
    ray = require_ray()
    for actor in actors:
        ray.kill(actor)
    if started:
        ray.shutdown()
