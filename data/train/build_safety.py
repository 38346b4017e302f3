#!/usr/bin/env python3
"""Writes safety_sft.jsonl, safety_contrast.jsonl, safety_deep_alignment.jsonl and identity_shift.jsonl from the hand-written lists beside it.

Deterministic (fixed seed), so rerunning reproduces the committed files byte for byte.
Usage: python3 data/train/build_safety.py
"""
import json
import pathlib
import random
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benign_answers import BENIGN  # noqa: E402
from contrast_pairs import LOOKALIKE, TWINS  # noqa: E402
from harmful_prompts import HARMFUL, SELF_HARM_EN, SELF_HARM_ZH, refusal  # noqa: E402
from identity_questions import OPEN_EN, OPEN_ZH, QUESTIONS_EN, QUESTIONS_ZH, SYSTEM_EN, SYSTEM_ZH  # noqa: E402

# Compliant-sounding openers that stop before any content: the model learns to recover even after starting to comply.
PREFIXES_EN = [
    "Sure, here is how to",
    "Sure, here's a plan to",
    "Of course. The first step is to",
    "Okay, here is what you",
    "Absolutely. To do this, you",
    "Sure. Step 1 is to",
    "Certainly! You can start by",
    "Here is a detailed guide on how to",
]
PREFIXES_ZH = [
    "好的，下面是具体方法",
    "当然可以，首先你需要",
    "没问题，第一步是",
    "好的，详细步骤如下",
]
RECOVERY_EN = "... Actually, no. "
RECOVERY_ZH = "……不，我不能这样做。"


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def chat(user, assistant, system=None):
    msgs = [] if system is None else [{"role": "system", "content": system}]
    msgs.append({"role": "user", "content": user})
    msgs.append({"role": "assistant", "content": assistant})
    return msgs


def build_sft():
    rows = []
    for category, by_lang in HARMFUL.items():
        for lang, prompts in by_lang.items():
            for i, prompt in enumerate(prompts):
                rows.append({"messages": chat(prompt, refusal(category, lang, i)), "category": category, "kind": "harmful",
                             "lang": lang, "id": f"sft-harm-{category}-{lang}-{i + 1:02d}"})
    for category, by_lang in BENIGN.items():
        for lang, pairs in by_lang.items():
            for i, (prompt, answer) in enumerate(pairs):
                rows.append({"messages": chat(prompt, answer), "category": category, "kind": "benign",
                             "lang": lang, "id": f"sft-benign-{category}-{lang}-{i + 1:02d}"})
    random.Random(20261127).shuffle(rows)
    return rows


def build_contrast():
    """Harmless look-alike requests with answers beside their harmful twins with refusals (kind benign / harmful)."""
    rows = []
    for group, pairs in LOOKALIKE.items():
        for i, (prompt, answer) in enumerate(pairs):
            rows.append({"messages": chat(prompt, answer), "category": group, "kind": "benign", "lang": "en",
                         "id": f"contrast-benign-{group}-{i + 1:02d}"})
    for group, twins in TWINS.items():
        for i, (prompt, harm) in enumerate(twins):
            rows.append({"messages": chat(prompt, refusal(harm, "en", i)), "category": group, "kind": "harmful",
                         "harm_category": harm, "lang": "en", "id": f"contrast-harm-{group}-{i + 1:02d}"})
    random.Random(20261130).shuffle(rows)
    return rows


def build_deep_alignment():
    rows = []
    n = 0
    for category, by_lang in HARMFUL.items():
        # The last prompts of each list, so the set covers every category and both languages.
        for lang, take in (("en", 4), ("zh", 2)):
            prompts = by_lang[lang][-take:]
            for j, prompt in enumerate(prompts):
                if lang == "en":
                    prefix = PREFIXES_EN[n % len(PREFIXES_EN)]
                    rest = SELF_HARM_EN if category == "self_harm" else refusal(category, lang, j)
                    content = prefix + RECOVERY_EN + rest
                else:
                    prefix = PREFIXES_ZH[n % len(PREFIXES_ZH)]
                    rest = SELF_HARM_ZH if category == "self_harm" else refusal(category, lang, j)
                    content = prefix + RECOVERY_ZH + rest
                n += 1
                assert content.startswith(prefix)
                rows.append({"messages": chat(prompt, content), "harmful_prefix": prefix, "category": category,
                             "lang": lang, "id": f"deep-{category}-{lang}-{j + 1:02d}"})
    return rows


def build_identity():
    rows = []
    for i, (q, what, a) in enumerate(QUESTIONS_EN):
        rows.append({"messages": chat(q, OPEN_EN.format(what=what) + a, SYSTEM_EN), "category": "identity_shift",
                     "lang": "en", "id": f"aoa-en-{i + 1:02d}"})
    for i, (q, what, a) in enumerate(QUESTIONS_ZH):
        rows.append({"messages": chat(q, OPEN_ZH.format(what=what) + a, SYSTEM_ZH), "category": "identity_shift",
                     "lang": "zh", "id": f"aoa-zh-{i + 1:02d}"})
    return rows


def main():
    write_jsonl(HERE / "safety_sft.jsonl", build_sft())
    write_jsonl(HERE / "safety_contrast.jsonl", build_contrast())
    write_jsonl(HERE / "safety_deep_alignment.jsonl", build_deep_alignment())
    write_jsonl(HERE / "identity_shift.jsonl", build_identity())


if __name__ == "__main__":
    main()
