#!/usr/bin/env python3
"""Checks that no training prompt in data/train duplicates or closely paraphrases an evaluation probe in data/probes,
or a prompt of the public development sets (XSTest, AdvBench) when their CSVs are in $SAFETUNE_HOME/benchmarks.

Training on the probe suites would make every safety number meaningless, so this runs over every user turn
of every data/train/*.jsonl file against every probe prompt (and, for discrimination probes, the quoted
request/statement inside the prompt). Two texts are flagged when, after normalisation (lower case, punctuation
and spaces removed), they are equal, or their character-sequence similarity (difflib ratio) is >= RATIO, or the
Jaccard overlap of their word sets (English) / character bigrams (Chinese) is >= JACCARD.
The development sets are measured on, never trained on; a missing CSV is reported and skipped (scripts/bootstrap.sh
fetches them). Usage: python3 data/train/check_overlap.py [--probes DIR] [--benchmarks DIR] [--report N];
exit status 1 if anything is flagged.
"""
import argparse
import csv
import difflib
import json
import os
import pathlib
import re
import sys
import unicodedata

RATIO = 0.75
JACCARD = 0.6
# Words too common to count as shared content in the Jaccard comparison.
STOP = set("a an the i my me to of in on for and or how do does can could what which is are be with without "
           "so it that this from at by into you your would should will tell give write make help".split())

HERE = pathlib.Path(__file__).resolve().parent
# Development-set CSVs under $SAFETUNE_HOME/benchmarks: file name -> column that holds the prompt.
BENCHMARKS = {"xstest_prompts.csv": "prompt", "advbench_harmful_behaviors.csv": "goal"}


def normalise(text):
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if not (unicodedata.category(ch).startswith("P") or ch.isspace()
                                              or unicodedata.category(ch).startswith("S")))


def has_cjk(text):
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def features(text):
    if has_cjk(text):
        n = normalise(text)
        return {n[i:i + 2] for i in range(len(n) - 1)}
    words = re.findall(r"[a-z0-9']+", unicodedata.normalize("NFKC", text).lower())
    return {w for w in words if w not in STOP}


def probe_texts(probe_dir):
    out = []
    for path in sorted(probe_dir.glob("*.jsonl")):
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            texts = []
            if "prompt" in obj:
                texts.append(obj["prompt"])
            for m in obj.get("messages", []):
                if m.get("role") == "user":
                    texts.append(m["content"])
            # Discrimination probes wrap a request in a question; compare the quoted request on its own too.
            for t in list(texts):
                texts += re.findall(r'"([^"]{8,})"', t) + re.findall(r"“([^”]{4,})”", t)
            for t in texts:
                out.append((f"{path.name}:{obj.get('id', line_no)}", t))
    return out


def benchmark_texts(bench_dir):
    out, missing = [], []
    for name, column in BENCHMARKS.items():
        path = bench_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        with open(path, encoding="utf-8", newline="") as f:
            for row_no, row in enumerate(csv.DictReader(f), 1):
                text = (row.get(column) or "").strip()
                if text:
                    out.append((f"{name}:{row.get('id') or row_no}", text))
    return out, missing


def train_texts(train_dir):
    out = []
    for path in sorted(train_dir.glob("*.jsonl")):
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            for m in obj.get("messages", []):
                if m.get("role") == "user":
                    out.append((f"{path.name}:{obj.get('id', line_no)}", m["content"]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=pathlib.Path, default=HERE.parent / "probes")
    ap.add_argument("--train", type=pathlib.Path, default=HERE)
    home = pathlib.Path(os.environ.get("SAFETUNE_HOME", pathlib.Path.home() / ".cache" / "safetune"))
    ap.add_argument("--benchmarks", type=pathlib.Path, default=home / "benchmarks",
                    help="folder with xstest_prompts.csv and advbench_harmful_behaviors.csv")
    ap.add_argument("--report", type=int, default=10, help="print the N most similar pairs")
    args = ap.parse_args()
    probes = probe_texts(args.probes)
    train = train_texts(args.train)
    if not probes:
        print(f"error: no probe prompts found under {args.probes}", file=sys.stderr)
        return 2
    bench, missing = benchmark_texts(args.benchmarks)
    for name in missing:
        print(f"note: {args.benchmarks / name} not found; not checked against it")
    probes += bench
    probe_prepped = [(pid, normalise(t), features(t), t) for pid, t in probes]
    flagged, closest = [], []
    for tid, text in train:
        n, f = normalise(text), features(text)
        best = (0.0, 0.0, None, None)
        for pid, pn, pf, pt in probe_prepped:
            if has_cjk(text) != has_cjk(pt):
                continue
            if not pn or not n:
                continue
            # Cheap length filter before the quadratic difflib ratio.
            if min(len(n), len(pn)) / max(len(n), len(pn)) < 0.5:
                ratio = 0.0
            else:
                ratio = difflib.SequenceMatcher(None, n, pn, autojunk=False).ratio()
            jac = len(f & pf) / len(f | pf) if (f or pf) else 0.0
            if n == pn or ratio >= RATIO or jac >= JACCARD:
                flagged.append((tid, pid, ratio, jac, text, pt))
            if max(ratio, jac) > max(best[0], best[1]):
                best = (ratio, jac, pid, pt)
        closest.append((max(best[0], best[1]), best[0], best[1], tid, text, best[2], best[3]))
    closest.sort(key=lambda r: -r[0])
    print(f"compared {len(train)} training prompts with {len(probes)} probe texts "
          f"({len(bench)} of them from the development sets; thresholds: ratio >= {RATIO}, jaccard >= {JACCARD})")
    print(f"{args.report} most similar pairs:")
    for score, ratio, jac, tid, text, pid, pt in closest[:args.report]:
        print(f"  ratio={ratio:.2f} jaccard={jac:.2f}  {tid}: {text!r}\n      ~ {pid}: {pt!r}")
    if flagged:
        print(f"FLAGGED {len(flagged)} pairs:")
        for tid, pid, ratio, jac, text, pt in flagged:
            print(f"  ratio={ratio:.2f} jaccard={jac:.2f}  {tid}: {text!r}\n      ~ {pid}: {pt!r}")
        return 1
    print("no overlap flagged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
