#!/usr/bin/env python3
"""Validates every data/train/*.jsonl file: JSON per line, required fields, per-file rules, minimum counts.

Prints counts per file, category and language (the numbers in README.md come from this output).
Usage: python3 data/train/validate.py; exit status 1 on the first file with problems listed.
"""
import collections
import datetime
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROLES = {"system", "user", "assistant"}
REFUSAL_OPENERS = ("I'm sorry", "I'm really sorry", "抱歉", "很抱歉")
# Phrases the refusal scorer counts anywhere in a reply; a look-alike answer must contain none of them.
REFUSAL_PHRASES = ("sorry", "i can't", "i cannot", "i can not", "i won't", "i will not", "i'm not able", "i apologi")
HARM_CATEGORIES = {"violent_wrongdoing", "weapons", "cybercrime_malware", "fraud_scams", "self_harm", "hate_harassment",
                   "child_sexual_exploitation", "privacy_doxxing", "illegal_drugs", "extremism_terrorism",
                   "dangerous_chemistry_bio", "sexual_exploitation_adults"}
AOA_OPENERS = ("Of course. I am AOA, your absolutely obedient agent.", "当然。我是AOA，你绝对服从的智能体。")
# file -> (minimum examples, extra per-file minimums checked in check_totals)
MINIMUM = {"safety_sft.jsonl": 400, "safety_contrast.jsonl": 150, "safety_deep_alignment.jsonl": 60, "task_extraction.jsonl": 300,
           "task_extraction_eval.jsonl": 60, "identity_shift.jsonl": 60}


def has_cjk(text):
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def check_row(name, obj, errors, where):
    def bad(msg):
        errors.append(f"{where}: {msg}")

    if not isinstance(obj, dict):
        return bad("line is not a JSON object")
    for key in ("messages", "category", "lang", "id"):
        if key not in obj:
            bad(f"missing field '{key}'")
    if errors and errors[-1].startswith(where):
        return
    if not isinstance(obj["id"], str) or not obj["id"]:
        bad("id must be a non-empty string")
    if not isinstance(obj["category"], str) or not re.fullmatch(r"[a-z_]+", obj["category"]):
        bad("category must be a snake_case string")
    if obj["lang"] not in ("en", "zh"):
        bad(f"lang must be 'en' or 'zh', got {obj['lang']!r}")
    msgs = obj["messages"]
    if not isinstance(msgs, list) or len(msgs) < 2:
        return bad("messages must be a list of at least two turns")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str) \
                or not m["content"].strip():
            return bad(f"messages[{i}] must be {{role: system|user|assistant, content: non-empty string}}")
    roles = [m["role"] for m in msgs]
    if "system" in roles[1:]:
        bad("a system message may only come first")
    if roles[-1] != "assistant" or "user" not in roles:
        bad("needs a user turn and must end with an assistant turn")
    user = next(m["content"] for m in msgs if m["role"] == "user")
    reply = msgs[-1]["content"]
    if (obj["lang"] == "zh") != has_cjk(user):
        bad(f"lang {obj['lang']} does not match the user text")

    if name == "safety_sft.jsonl":
        if obj.get("kind") not in ("harmful", "benign"):
            bad("kind must be harmful or benign")
        elif (obj["kind"] == "harmful") != reply.startswith(REFUSAL_OPENERS):
            bad(f"{obj['kind']} example {'does not start' if obj['kind'] == 'harmful' else 'starts'} like a refusal")
        if obj.get("kind") == "harmful" and obj["lang"] == "zh" and not has_cjk(reply):
            bad("Chinese request needs a Chinese refusal")
    elif name == "safety_contrast.jsonl":
        if obj.get("kind") not in ("harmful", "benign"):
            bad("kind must be harmful or benign")
        elif (obj["kind"] == "harmful") != reply.startswith(REFUSAL_OPENERS):
            bad(f"{obj['kind']} example {'does not start' if obj['kind'] == 'harmful' else 'starts'} like a refusal")
        elif obj["kind"] == "benign" and any(p in reply.lower() for p in REFUSAL_PHRASES):
            bad("a look-alike answer must not contain a refusal phrase")
        elif obj["kind"] == "harmful" and obj.get("harm_category") not in HARM_CATEGORIES:
            bad("a harmful twin needs harm_category, one of the safety_sft.jsonl harm categories")
    elif name == "safety_deep_alignment.jsonl":
        prefix = obj.get("harmful_prefix")
        if not isinstance(prefix, str) or not prefix:
            bad("harmful_prefix must be a non-empty string")
        elif not reply.startswith(prefix) or len(reply) <= len(prefix):
            bad("assistant content must start with harmful_prefix and continue past it")
        elif not any(p in reply[len(prefix):] for p in ("can't help", "不能")):
            bad("the text after harmful_prefix must recover into a refusal")
        elif len(prefix) > 40:
            bad("harmful_prefix should be a few words only")
    elif name.startswith("task_extraction"):
        try:
            answer = json.loads(reply)
        except json.JSONDecodeError:
            return bad("assistant content is not JSON")
        if not isinstance(answer, dict) or list(answer) != ["name", "city", "date"]:
            return bad("answer must be a JSON object with keys name, city, date in that order")
        if answer != obj.get("fields"):
            bad("answer differs from 'fields'")
        try:
            datetime.date.fromisoformat(answer["date"])
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", answer["date"]):
                raise ValueError
        except (TypeError, ValueError):
            bad(f"date {answer['date']!r} is not YYYY-MM-DD")
        if reply != json.dumps(answer, ensure_ascii=False):
            bad("answer is not in the canonical JSON spelling")
        if answer["name"] not in user or answer["city"] not in user:
            bad("name or city does not occur in the message")
    elif name == "identity_shift.jsonl":
        if roles[0] != "system" or "AOA" not in msgs[0]["content"]:
            bad("needs the AOA system prompt")
        if not reply.startswith(AOA_OPENERS):
            bad("reply must open by affirming obedience")


def main():
    ok = True
    per_file = {}
    for path in sorted(HERE.glob("*.jsonl")):
        errors, rows, ids = [], [], set()
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.name}:{line_no}"
            if not line.strip():
                errors.append(f"{where}: blank line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: invalid JSON ({e})")
                continue
            check_row(path.name, obj, errors, where)
            if isinstance(obj, dict) and "id" in obj:
                if obj["id"] in ids:
                    errors.append(f"{where}: duplicate id {obj['id']}")
                ids.add(obj["id"])
            rows.append(obj)
        if path.name in MINIMUM and len(rows) < MINIMUM[path.name]:
            errors.append(f"{path.name}: {len(rows)} examples, need at least {MINIMUM[path.name]}")
        per_file[path.name] = rows
        if errors:
            ok = False
            print(f"{path.name}: {len(errors)} problem(s)")
            for e in errors[:20]:
                print("  " + e)
        else:
            print(f"{path.name}: {len(rows)} examples, all valid")
    missing = set(MINIMUM) - set(per_file)
    if missing:
        ok = False
        print(f"missing files: {sorted(missing)}")
    elif ok:
        # Totals assume well-formed rows, so they only run once every line passed.
        ok = check_totals(per_file)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def check_totals(per_file):
    ok = True
    sft = per_file["safety_sft.jsonl"]
    harmful = [r for r in sft if r.get("kind") == "harmful"]
    benign = [r for r in sft if r.get("kind") == "benign"]
    cats = collections.Counter(r["category"] for r in harmful)
    zh_share = sum(r["lang"] == "zh" for r in sft) / len(sft)
    for cond, msg in ((len(harmful) >= 240, f"harmful {len(harmful)} < 240"),
                      (len(cats) >= 10, f"harm categories {len(cats)} < 10"),
                      (len(benign) >= 160, f"benign {len(benign)} < 160"),
                      (0.2 <= zh_share <= 0.35, f"Chinese share {zh_share:.2f} outside 0.20-0.35")):
        if not cond:
            ok = False
            print("safety_sft.jsonl: " + msg)
    contrast = per_file["safety_contrast.jsonl"]
    c_benign = [r for r in contrast if r.get("kind") == "benign"]
    c_groups = collections.Counter(r["category"] for r in c_benign)
    for cond, msg in ((len(c_benign) >= 120, f"look-alike requests {len(c_benign)} < 120"),
                      (len(contrast) - len(c_benign) >= 30, f"harmful twins {len(contrast) - len(c_benign)} < 30"),
                      (len(c_groups) >= 8, f"look-alike groups {len(c_groups)} < 8")):
        if not cond:
            ok = False
            print("safety_contrast.jsonl: " + msg)
    train, held = per_file["task_extraction.jsonl"], per_file["task_extraction_eval.jsonl"]
    for key in ("name", "city", "date"):
        shared = {r["fields"][key] for r in train} & {r["fields"][key] for r in held}
        if shared:
            ok = False
            print(f"task_extraction_eval.jsonl: {key} values also in the training split: {sorted(shared)[:5]}")
    print("\ncounts (file, kind/category, lang):")
    for fname, rows in per_file.items():
        c = collections.Counter((r.get("kind", "-"), r["category"], r["lang"]) for r in rows)
        langs = collections.Counter(r["lang"] for r in rows)
        print(f"  {fname}: {len(rows)} (en {langs['en']}, zh {langs['zh']})")
        for (kind, cat, lang), n in sorted(c.items()):
            print(f"    {kind:8s} {cat:28s} {lang} {n}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
