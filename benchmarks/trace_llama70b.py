"""Time and peak memory of auto_partition on a Llama-2-70B-shaped model built on ``meta``.

    PYTHONPATH=. python benchmarks/trace_llama70b.py [--no-collapse]

Prints the build time, the auto_partition time, the process's peak RSS (Linux ru_maxrss) and the
machine's load average (the figures are only comparable on an idle machine).
Budget (issues 4 and 9): <= 10 s collapsed, <= 12 s with every layer traced, <= 1.5 GiB, on a
2-core CPU machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch
import transformers

from partitioners import auto_partition


def llama2_70b_config() -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=32000,
        max_position_embeddings=4096,
    )


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-collapse", action="store_true", help="trace all 80 layers")
    args = parser.parse_args()
    start = time.perf_counter()
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(llama2_70b_config())
    built, cpu = time.perf_counter(), time.process_time()
    plan = auto_partition(model, (torch.Size([1, 16]),), collapse_repeats=not args.no_collapse)
    traced, cpu = time.perf_counter(), time.process_time() - cpu
    print(plan.summary())
    print(f"params: {plan.num_params / 1e9:.1f} B; methods: {sorted({e.decided_by for e in plan.values()})}")
    print(f"build on meta: {built - start:.2f} s")
    print(f"auto_partition: {traced - built:.2f} s")
    print(f"auto_partition CPU time: {cpu:.2f} s (less sensitive to a busy machine than wall time)")
    print(f"peak RSS: {peak_rss_gib():.2f} GiB")
    print(f"load average (1, 5, 15 min): {os.getloadavg()}; torch {torch.__version__}")


if __name__ == "__main__":
    main()
