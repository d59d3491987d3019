"""`lam-train` / `lam-compare`: a Hydra + Lightning app around AdamMini (configs in ../configs)."""
