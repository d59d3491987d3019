"""``lam-partition``: print a model's partition plan table, optionally write it as YAML.

    lam-partition tests.models.nanogpt:gpt --shape 2,16
    lam-partition path/to/config.json --yaml plan.yaml     # a Hugging Face config, built on meta
    lam-partition gpt2 --rules rules.yaml                   # config name: must be cached locally

A ``module:factory`` is called without arguments and returns a model, or ``(model, example_inputs)``.
A Hugging Face config is built with random init on the ``meta`` device: no weights are read.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .auto import GRAPH_METHODS, auto_partition
from .plan import PartitionPlan


def _from_factory(spec: str) -> tuple[nn.Module, tuple[Any, ...] | None]:
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise LookupError(f"model {spec!r}: cannot import module {module_name!r} ({err})") from None
    factory: Any = getattr(module, attr, None)
    if not callable(factory):
        raise LookupError(f"model {spec!r}: module {module_name!r} has no callable {attr!r}")
    built: Any = factory()
    if isinstance(built, tuple):
        model, inputs = built
        return model, tuple(inputs)
    return built, None


def _from_hf_config(spec: str) -> nn.Module:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SystemExit(
            f"lam-partition: {spec!r} looks like a Hugging Face config, but transformers isn't installed"
        ) from err
    path = Path(spec)
    if path.is_file():
        config = transformers.AutoConfig.from_pretrained(
            str(path.parent) if path.name == "config.json" else str(path)
        )
    elif path.suffix == ".json" or spec.startswith(("/", ".", "~")):
        raise LookupError(f"model {spec!r}: no such file")
    else:
        try:
            config = transformers.AutoConfig.from_pretrained(spec, local_files_only=True)
        except (OSError, ValueError):
            raise LookupError(
                f"model {spec!r}: no such file, not module:factory, and no Hugging Face config of "
                "that name in the local cache (nothing is downloaded)"
            ) from None
    with torch.device("meta"):
        for auto in (transformers.AutoModelForCausalLM, transformers.AutoModel):
            try:
                return auto.from_config(config)
            except ValueError:
                continue
    raise SystemExit(f"lam-partition: no model class for config {spec!r}")


def load_model(spec: str) -> tuple[nn.Module, tuple[Any, ...] | None]:
    """A model (and maybe its example inputs) from ``module:factory`` or a Hugging Face config."""
    if ":" in spec and not Path(spec).exists():
        return _from_factory(spec)
    return _from_hf_config(spec), None


def parse_shape(text: str) -> torch.Size:
    try:
        return torch.Size(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--shape takes comma-separated ints like 2,16, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lam-partition", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("model", help="module:factory, a Hugging Face config file, or a cached config name")
    parser.add_argument(
        "--shape",
        type=parse_shape,
        action="append",
        help="shape of one example input (token ids if the model embeds them); repeat "
        "for several inputs; default 1,16 when the factory gives no inputs",
    )
    parser.add_argument("--yaml", type=Path, help="also write the plan to this YAML file")
    parser.add_argument("--rules", type=Path, help="YAML file of override rules applied on top")
    parser.add_argument("--no-collapse", action="store_true", help="trace every repeated block")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 if any parameter was not read from the graph (fallbacks, "
        "unexplained uses); parameters pinned by --rules count as decided",
    )
    return parser


def not_read_from_graph(plan: PartitionPlan) -> list[str]:
    """Parameters that a fallback decided, or that the graph used in a way it couldn't explain."""
    return [
        name
        for name, entry in plan.items()
        if entry.decided_by != "rule"
        and (entry.decided_by.split(" ")[0] not in GRAPH_METHODS or entry.role == "other")
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rules and not args.rules.is_file():
        parser.error(f"--rules {str(args.rules)!r}: no such file")
    if args.yaml and not args.yaml.parent.is_dir():
        parser.error(f"--yaml {str(args.yaml)!r}: directory {str(args.yaml.parent)!r} does not exist")
    try:
        model, inputs = load_model(args.model)
    except LookupError as err:
        parser.error(str(err))
    if args.shape:
        inputs = tuple(args.shape)
    elif inputs is None:
        inputs = (torch.Size([1, 16]),)
    rules = args.rules.read_text() if args.rules else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = auto_partition(model, inputs, overrides=rules, collapse_repeats=not args.no_collapse)
    print(plan)
    for w in caught:
        if "auto_partition" in str(w.message):
            print(f"warning: {w.message}", file=sys.stderr)
    if args.yaml:
        args.yaml.write_text(plan.to_yaml())
        print(f"wrote {args.yaml}", file=sys.stderr)
    missed = not_read_from_graph(plan) if args.strict else []
    if missed:
        print(
            f"lam-partition --strict: {len(missed)} not read from the graph: {', '.join(missed)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
