"""Where work runs: the executor settings of ``attack`` and ``confmap`` (light: no Ray import)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from onepixel.errors import ConfigError, is_integer, is_real

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """Settings of the executor.

    Attributes
    ----------
    kind : {"local", "ray"}
        ``local`` runs in this process; ``ray`` on a Ray runtime (``pip install 'onepixel[ray]'``).
    address : str, optional
        Ray only. None: start a local Ray runtime on this machine; ``auto``: the cluster this
        machine belongs to (``ray start``); ``ray://HOST:PORT``: a remote cluster's client port.
    workers : int, optional
        Ray only: actors, each holding the model. None: one per ``cpus_per_worker`` CPUs of the
        cluster, or one per ``gpus_per_worker`` GPUs when that is set.
    cpus_per_worker : int
        CPUs each actor reserves, and the threads its model runs on.
    gpus_per_worker : float
        GPUs each actor reserves (0: CPU actors; 0.5: two actors share a GPU).
    max_retries : int
        Times a batch is re-run after its actor died (Ray restarts the actor) before the
        campaign stops with an error; the driver's resume then finishes the work.
    """

    kind: str = "local"
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"ExecutorConfig.kind must be one of {', '.join(EXECUTORS)}, got {self.kind!r}",
                              field="ExecutorConfig.kind")
        if self.workers is not None and (not is_integer(self.workers) or not 1 <= self.workers <= 4096):
            raise ConfigError(f"ExecutorConfig.workers must be an integer within 1..4096, "
                              f"got {self.workers!r}",
                              field="ExecutorConfig.workers")
        if not is_integer(self.cpus_per_worker) or self.cpus_per_worker < 1:
            raise ConfigError(f"ExecutorConfig.cpus_per_worker must be an integer >= 1, got "
                              f"{self.cpus_per_worker!r}", field="ExecutorConfig.cpus_per_worker")
        if not is_real(self.gpus_per_worker) or not 0 <= self.gpus_per_worker <= 64:
            raise ConfigError(f"ExecutorConfig.gpus_per_worker must be within 0..64, got "
                              f"{self.gpus_per_worker!r}", field="ExecutorConfig.gpus_per_worker")
        if not is_integer(self.max_retries) or self.max_retries < 0:
            raise ConfigError(f"ExecutorConfig.max_retries must be an integer >= 0, got {self.max_retries!r}",
                              field="ExecutorConfig.max_retries")
        if self.kind == "local" and (self.address is not None or self.workers is not None
                                     or self.gpus_per_worker):
            raise ConfigError("ExecutorConfig.address, workers and gpus_per_worker need kind='ray'",
                              field="ExecutorConfig.kind")
        if self.address is not None and not (self.address == "auto"
                                             or self.address.startswith("ray://")
                                             or ":" in self.address):
            raise ConfigError(f"ExecutorConfig.address must be 'auto', ray://HOST:PORT or HOST:PORT, "
                              f"got {self.address!r}", field="ExecutorConfig.address")

    def to_dict(self) -> dict:
        return asdict(self)
