#!/usr/bin/env python3
"""The README's zero-shot quality table from ./eval results files.

    scripts/eval_table.py "teacher=teacher.json" "LoLCATs=runs/quality/lolcats_terrace/eval_results.json" ...

One row per LABEL=FILE: the paper's metric of each task (PiQA acc, ARC-e acc, ARC-c acc_norm,
HellaSwag acc_norm, WinoGrande acc, MMLU 5-shot macro average) in % with its standard error, the
average of the five zero-shot tasks (the paper's "0-shot average"), the Alpaca validation
perplexity when the file has it, and the seconds ./eval spent on the tasks.
"""
import json
import sys

TASKS = [("piqa", "PiQA"), ("arc_easy", "ARC-e"), ("arc_challenge", "ARC-c"), ("hellaswag", "HellaSwag"),
         ("winogrande", "WinoGrande")]


def paper_metric(task):
    want = task["paper_metric"]
    for m in task["metrics"]:
        if m["name"] == want:
            return m
    raise KeyError(want)


def main(args):
    header = [name for _, name in TASKS] + ["0-shot avg", "MMLU (5-shot)", "val ppl", "n per task", "eval time"]
    print("| model | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for arg in args:
        label, path = arg.split("=", 1)
        r = json.load(open(path))["tasks"]
        cells, zero_shot, seconds, ns = [], [], 0.0, set()
        for key, _ in TASKS:
            m = paper_metric(r[key])
            cells.append(f"{100 * m['value']:.1f} ± {100 * m['stderr']:.1f}")
            zero_shot.append(100 * m["value"])
            seconds += r[key]["seconds"]
            ns.add(m["n"])
        cells.append(f"{sum(zero_shot) / len(zero_shot):.1f}")
        mm = paper_metric(r["mmlu"])
        cells.append(f"{100 * mm['value']:.1f} ± {100 * mm['stderr']:.1f}")
        seconds += r["mmlu"]["seconds"]
        cells.append(f"{r['ppl']['metrics'][0]['value']:.3f}" if "ppl" in r else "-")
        cells.append("/".join(str(n) for n in sorted(ns)) + f", MMLU {mm['n']}")
        cells.append(f"{seconds / 60:.1f} min")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
