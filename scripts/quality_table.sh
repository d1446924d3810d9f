#!/usr/bin/env bash
# The README's quality table: LoLCATs and its two ablations on the default model and data, one
# token budget, then a markdown table from their summary.json files.
#   scripts/quality_table.sh [STAGE1_STEPS] [STAGE2_STEPS] [THREADS]    (default 300 50 0)
#   EVAL_LIMIT=500 scripts/quality_table.sh ...   then also the zero-shot table: ./eval --limit 500 of
#                                                 the teacher and of each run (about 15 min each)
# Swap + LoRA has no stage 1, so its LoRA gets STAGE1 + STAGE2 steps: every row sees the same number
# of training tokens. Each run is a ./linearize run folder under runs/quality/ (about 25 / 40 / 35
# minutes on 2 cores at the defaults); one that has a summary.json is not repeated, a stopped one resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
S1=${1:-300} S2=${2:-50} THREADS=${3:-0}
common=(--eval-every 25 --threads "$THREADS" --resume)

run() {  # name, then its flags
  local out=runs/quality/$1
  shift
  if [[ -f $out/summary.json ]]; then return; fi
  echo "== $out: ./linearize ${common[*]} $*" >&2
  ./linearize --out "$out" "${common[@]}" "$@"
}
run lolcats_terrace --stage1-steps "$S1" --stage2-steps "$S2"
run swap_lora --no-attention-transfer --stage2-steps $((S1 + S2))
run linear_only --attention linear --stage1-steps "$S1" --stage2-steps "$S2"

if [[ -n ${EVAL_LIMIT:-} ]]; then  # the paper's tasks, --limit N of each (a seeded subset), and ppl
  tasks=piqa,arc_easy,arc_challenge,hellaswag,winogrande,mmlu,ppl
  [[ -f runs/quality/teacher.json ]] ||
    ./eval --tasks $tasks --limit "$EVAL_LIMIT" --threads "$THREADS" --out runs/quality/teacher.json
  for k in lolcats_terrace swap_lora linear_only; do
    [[ -f runs/quality/$k/eval_results.json ]] ||
      ./eval --linearized runs/quality/$k/lolcats_params.safetensors --tasks $tasks --limit "$EVAL_LIMIT" \
             --threads "$THREADS"
  done
  scripts/eval_table.py "teacher=runs/quality/teacher.json" \
    "LoLCATs=runs/quality/lolcats_terrace/eval_results.json" \
    "swap + LoRA=runs/quality/swap_lora/eval_results.json" \
    "linear only=runs/quality/linear_only/eval_results.json"
fi

python3 - "$S1" "$S2" <<'EOF'
import json, sys
rows = [("LoLCATs (terrace window + Hedgehog, attention transfer + LoRA)", "lolcats_terrace"),
        ("swap + LoRA (terrace window, no attention transfer)", "swap_lora"),
        ("linear only (Hedgehog, no window; attention transfer + LoRA)", "linear_only")]
s = {k: json.load(open(f"runs/quality/{k}/summary.json")) for _, k in rows}
teacher = s["lolcats_terrace"]["teacher_val_ppl"]
s1, s2 = int(sys.argv[1]), int(sys.argv[2])
print(f"stage 1: {s1} steps, stage 2: {s2} steps; swap + LoRA: {s1 + s2} LoRA steps (T=512, 1 chunk per step)\n")
print("| model | val ppl after stage 1 | val ppl after stage 2 | attention MSE x1000 (init -> final) | tokens (stage 1 + 2) |")
print("|---|---|---|---|---|")
print(f"| teacher (softmax attention) | {teacher:.3f} | {teacher:.3f} | - | - |")
for name, k in rows:
    r = s[k]
    cut = r['attn_mse_init'] / r['attn_mse_final']
    mse = f"{r['attn_mse_init']:.1f} (untrained)" if r['tokens_stage1'] == 0 else \
          f"{r['attn_mse_init']:.1f} -> {r['attn_mse_final']:.1f} ({cut:.1f}x)"
    print(f"| {name} | {r['stage1_val_ppl']:.3f} | {r['stage2_val_ppl']:.3f} | {mse} | "
          f"{r['tokens_stage1']:,} + {r['tokens_stage2']:,} |")
EOF
