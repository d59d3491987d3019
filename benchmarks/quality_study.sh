#!/usr/bin/env bash
# Adam-mini against AdamW on the demo task, with the official package side by side (issue 11).
#
#   bash benchmarks/quality_study.sh [OUT]        # OUT defaults to outputs/quality_study
#
# Every run is a lam-train Hydra multirun (experiment=quality: train | val | test split); each
# sweep ends with lam-compare's summary.md in its directory. Two sweeps run at a time, one thread
# each (2-core machine). A stage whose summary.md exists is skipped, so an interrupted study
# resumes where it stopped. Stages:
#   1. tune:     lr grid per optimizer and layout on the default size and length, seed 0,
#                chosen by the *validation* loss
#   2. sweep:    3 sizes (>= 10x) x 2 lengths x 3 seeds x {adam_mini, adamw}, GPT-2 and Llama
#                layouts, each optimizer at its own tuned lr; reported on the *test* split
#   3. official: adam_mini_official and adam_mini (name plan) on llama_tiny, 3 seeds (the graph
#                plan's runs come from the sweep)
#   4. frontier: plans of different granularity on gpt_tiny and llama_tiny (400 steps, 2 seeds):
#                test loss against the number of second-moment values
# Then benchmarks/quality_report.py writes the tables and plots (docs/quality/).
set -euo pipefail
OUT=${1:-outputs/quality_study}
LRS=${LRS:-2.5e-3,5e-3,1e-2}
SEEDS=${SEEDS:-0,1,2}
FRONTIER_SEEDS=${FRONTIER_SEEDS:-0,1}
# sizes spanning 10x and more, the largest being the demo's own (gpt_tiny / llama_tiny); on a
# bigger machine add gpt_small / llama_small (~1.3M params)
GPT_SIZES=${GPT_SIZES:-gpt_micro,gpt_mini,gpt_tiny}
LLAMA_SIZES=${LLAMA_SIZES:-llama_micro,llama_mini,llama_tiny}
STEPS=${STEPS:-100,400}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
start=$(date +%s)

# sweep DIR ARGS...: one lam-train multirun into DIR, unless DIR already has its summary
sweep() {
  local dir=$1
  shift
  if [[ -f $dir/summary.md ]]; then
    echo "skip $dir (done)"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  lam-train -m experiment=quality "$@" hydra.sweep.dir="$dir" >"$dir.log" 2>&1
  echo "done $dir ($(($(date +%s) - start)) s since start)"
}

# in_parallel F G: run the shell functions F and G at once; fail if either fails
in_parallel() {
  "$1" &
  local first=$!
  "$2" &
  local second=$!
  wait "$first"
  wait "$second"
}

best_lr() { python benchmarks/quality_report.py best-lr "$OUT/tune" --optimizer "$1" --model "$2"; }

# 1. tune (one process per optimizer, both layouts)
tune() {
  sweep "$OUT/tune/$1-gpt" model=gpt_tiny optimizer="$1" optimizer.lr=$LRS seed=0
  sweep "$OUT/tune/$1-llama" model=llama_tiny optimizer="$1" optimizer.lr=$LRS seed=0
  # On the Llama the grid's lowest lr won for both optimizers: one step further down
  sweep "$OUT/tune/$1-llama-lower" model=llama_tiny optimizer="$1" optimizer.lr=1.25e-3 seed=0
}
tune_adam_mini() { tune adam_mini; }
tune_adamw() { tune adamw; }
in_parallel tune_adam_mini tune_adamw

# 2. sweep (one process per optimizer, each at its tuned lr per layout)
size_sweep() {
  sweep "$OUT/sweep/$1-gpt" model=$GPT_SIZES optimizer="$1" \
    optimizer.lr="$(best_lr "$1" gpt_tiny)" trainer.max_steps=$STEPS seed=$SEEDS
  sweep "$OUT/sweep/$1-llama" model=$LLAMA_SIZES optimizer="$1" \
    optimizer.lr="$(best_lr "$1" llama_tiny)" trainer.max_steps=$STEPS seed=$SEEDS
}
sweep_adam_mini() { size_sweep adam_mini; }
sweep_adamw() { size_sweep adamw; }
in_parallel sweep_adam_mini sweep_adamw

# 3. official package vs ours on the names it knows (same lr as our adam_mini on llama)
lr=$(best_lr adam_mini llama_tiny)
official() { sweep "$OUT/official/official" model=llama_tiny optimizer=adam_mini_official optimizer.lr="$lr" seed=$SEEDS; }
names() { sweep "$OUT/official/names" model=llama_tiny optimizer=adam_mini_names optimizer.lr="$lr" seed=$SEEDS; }
in_parallel official names

# 4. frontier: rules on top of the graph plan (partitioners.overrides); the graph plan and AdamW
#    themselves are the sweep's 400-step runs of the same model
frontier() { # LAYOUT MODEL LR PLAN OVERRIDES...
  sweep "$OUT/frontier/$1/$4" model="$2" optimizer=adam_mini optimizer.lr="$3" seed=$FRONTIER_SEEDS "${@:5}"
}
gpt() { frontier gpt gpt_tiny "$(best_lr adam_mini gpt_tiny)" "$@"; }
llama() { frontier llama llama_tiny "$(best_lr adam_mini llama_tiny)" "$@"; }
rule() { echo "partition.overrides=[{$1, layout: $2}]"; }
frontier_a() {
  gpt all_element "$(rule 'match: "*"' element)"
  gpt embed_element "$(rule 'module: Embedding' element)"
  gpt all_tensor "$(rule 'match: "*"' tensor)"
  llama all_element "$(rule 'match: "*"' element)"
  llama embed_element "$(rule 'module: Embedding' element)"
  llama head_element "$(rule 'match: lm_head.weight' element)"
}
frontier_b() {
  gpt norm_element "$(rule 'module: LayerNorm' element)"
  gpt mlp_element "$(rule 'match: "*.mlp.*.weight"' element)"
  gpt attn_element "$(rule 'match: "*.attn.*.weight"' element)"
  llama norm_element "$(rule 'module: RMSNorm' element)"
  llama mlp_element "$(rule 'match: "*.mlp.*.weight"' element)"
  llama attn_element "$(rule 'match: "*.self_attn.*.weight"' element)"
}
in_parallel frontier_a frontier_b

echo "study finished in $(($(date +%s) - start)) s"
python benchmarks/quality_report.py report "$OUT"
