"""Lightning adapters: ``adam_mini_optimizers`` for ``configure_optimizers`` and ``AdamMiniCallback``."""

from .callback import AdamMiniCallback
from .optimizers import adam_mini_optimizers

__all__ = ["AdamMiniCallback", "adam_mini_optimizers"]
