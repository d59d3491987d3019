"""A Lightning logger that keeps what it is given, for asserting on logged metrics."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only


class MemoryLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.history.append((step, dict(metrics)))

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def with_prefix(self, prefix: str) -> list[tuple[int | None, dict[str, float]]]:
        return [
            (s, {k: v for k, v in m.items() if k.startswith(prefix)})
            for s, m in self.history
            if any(k.startswith(prefix) for k in m)
        ]
