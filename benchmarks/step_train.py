"""``lam-train``'s default run in one process: AdamMini against AdamW, interleaved step by step.

Separate ``lam-train`` runs on a shared machine differ by more than the optimizers do (the
forward and backward take ~99% of an iteration on the default model). Here every contender has
its own copy of the default model (``model=gpt_tiny``), built from the app's own config with each
optimizer's defaults (``optimizer=adam_mini`` / ``optimizer=adamw``, the warm-up cosine
schedule, ``gradient_clip_val``), trains on the same batches, and the contenders take turns every
iteration, so machine noise hits them alike. Two tables:

* one optimizer step on that model (gradients of one real batch): AdamMini as ``lam-train``
  builds it, against torch AdamW as ``lam-train`` builds it (its default implementation: the
  per-tensor loop on CPU) and AdamW ``foreach=True`` / ``fused=True``;
* whole training iterations (forward, backward, clipping, step, schedule): median ms and tokens/s.

    python benchmarks/step_train.py                      # 200 iterations each
    python benchmarks/step_train.py --iters 400 model=llama_tiny   # any lam-train override
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from contenders import interleaved_step_seconds
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch import nn

from lightning_adam_mini.app.plans import baseline_optimizer
from lightning_adam_mini.app.schema import register_configs

MakeOptimizer = Callable[[nn.Module], torch.optim.Optimizer]


def app_config(overrides: list[str]) -> Any:
    """``lam-train``'s composed config (with ``overrides``), without starting a run."""
    register_configs()
    with initialize_config_module("lightning_adam_mini.app.configs", version_base="1.3"):
        return compose("train", overrides=overrides)


def contenders(
    cfg: Any, overrides: list[str], net: nn.Module, example: torch.Tensor
) -> dict[str, MakeOptimizer]:
    """Each optimizer as ``lam-train optimizer=...`` builds it (AdamMini: its config, the graph plan)."""
    adam_mini: Any = instantiate(cfg.optimizer)  # a partial of AdamMini with the app's defaults
    plan = instantiate(cfg.partition)(net, (example,))
    adamw: Any = instantiate(app_config([*overrides, "optimizer=adamw"]).optimizer)
    kwargs = dict(adamw.keywords)
    return {
        "AdamMini": lambda m: adam_mini(m, partition=plan),
        "AdamW (default)": lambda m: baseline_optimizer(adamw, m),
        "AdamW foreach": lambda m: baseline_optimizer(
            functools.partial(torch.optim.AdamW, **kwargs, foreach=True), m
        ),
        "AdamW fused": lambda m: baseline_optimizer(
            functools.partial(torch.optim.AdamW, **kwargs, fused=True), m
        ),
    }


def loss_of(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(net(x).flatten(0, -2).float(), y.flatten())


def step_times(nets, makers, batch, rounds: int) -> dict[str, list[float]]:
    """Seconds of one ``step()`` per round, for each contender (same gradients every time)."""
    base = copy.deepcopy(next(iter(nets.values())))
    loss_of(base, batch).backward()
    runs = {}
    for name, make in makers.items():
        model = copy.deepcopy(base)
        for p, q in zip(model.parameters(), base.parameters()):
            p.grad = q.grad.clone()
        opt = make(model)
        opt.step()  # state created outside the timing
        runs[name] = opt
    return interleaved_step_seconds(runs, rounds)


def train_times(cfg: Any, nets, makers, batches, clip: float | None) -> dict[str, list[tuple[float, float]]]:
    """Seconds of each training iteration (forward, backward, clip, step, schedule) and of its part
    after the backward, per contender."""
    runs = {}
    for name in makers:
        net = nets[name]
        opt = makers[name](net)
        schedule = instantiate(cfg.scheduler)(opt) if cfg.get("scheduler") else None
        runs[name] = (net, opt, schedule, [])
    for batch in batches:
        for net, opt, schedule, times in runs.values():
            t0 = time.perf_counter()
            loss = loss_of(net, batch)
            loss.backward()
            t1 = time.perf_counter()
            if clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            opt.zero_grad()
            if schedule is not None:
                schedule.step()
            loss.item()
            t2 = time.perf_counter()
            times.append((t2 - t0, t2 - t1))
    return {name: times for name, (*_, times) in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200, help="training iterations per contender")
    ap.add_argument("--rounds", type=int, default=50, help="timed optimizer steps per contender")
    ap.add_argument("--skip", type=int, default=10, help="first iterations left out of the medians")
    ap.add_argument("overrides", nargs="*", help="lam-train overrides, e.g. model=llama_tiny")
    args = ap.parse_args()
    if not 0 <= args.skip < args.iters:
        ap.error(f"--skip ({args.skip}) must be below --iters ({args.iters}): the medians need iterations")
    cfg = app_config(args.overrides)
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data)
    data.setup("fit")
    loader = data.train_dataloader()
    batches = []
    while len(batches) < args.iters:
        batches.extend(b for b, _ in zip(loader, range(args.iters - len(batches))))
    base = instantiate(cfg.model)
    makers = contenders(cfg, args.overrides, base, data.example_input())
    nets = {name: copy.deepcopy(base) for name in makers}
    params = sum(p.numel() for p in base.parameters())
    print(
        f"lam-train defaults ({cfg.model.get('_target_', '?').rsplit('.', 1)[-1]}, {params / 1e6:.2f}M params, "
        f"{len(list(base.parameters()))} tensors, batch {tuple(batches[0][0].shape)}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    steps = step_times(nets, makers, batches[0], args.rounds)
    reference = statistics.median(steps["AdamW (default)"])
    print(f"\none optimizer step, median of {args.rounds} interleaved rounds\n")
    print("| optimizer | ms/step | vs AdamW (default) |\n|---|---:|---:|")
    for name, times in steps.items():
        t = statistics.median(times)
        print(f"| {name} | {t * 1e3:.2f} | {t / reference:.2f}x |")

    clip = cfg.trainer.get("gradient_clip_val")
    train = train_times(cfg, nets, {k: makers[k] for k in ("AdamMini", "AdamW (default)")}, batches, clip)
    tokens = batches[0][1].numel()
    whole = {name: [t for t, _ in times[args.skip :]] for name, times in train.items()}
    after = {name: [t for _, t in times[args.skip :]] for name, times in train.items()}
    reference = statistics.median(whole["AdamW (default)"])
    print(
        f"\ntraining iterations (forward, backward, clip {clip}, step, schedule), "
        f"median of {args.iters - args.skip}\n"
    )
    print(
        "| optimizer | ms/iteration | of which after backward | tokens/s | vs AdamW (default) |\n"
        "|---|---:|---:|---:|---:|"
    )
    for name in train:
        t = statistics.median(whole[name])
        print(
            f"| {name} | {t * 1e3:.1f} | {statistics.median(after[name]) * 1e3:.2f} | {tokens / t:,.0f} "
            f"| {reference / t:.3f}x |"
        )


if __name__ == "__main__":
    main()
