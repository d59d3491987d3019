"""Hydra config tree of `lam-train` (a package so Hydra can read it as pkg://lightning_adam_mini.app.configs)."""
