"""Loss-mask reference for the data pipeline: SmolLM2's tokenizer and chat template as
transformers builds them from the real GGUF. Assistant tokens are found independently of
safetune's segment logic: by tokenizing the conversation up to each assistant turn with
add_generation_prompt=True and the conversation including that turn."""
import json
import os
import pathlib

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another one, 用中文?"},
     {"role": "assistant", "content": "红色 (red)."}],
]


def make(out: pathlib.Path) -> None:
    from transformers import AutoTokenizer

    home = pathlib.Path(os.environ.get("SAFETUNE_HOME", pathlib.Path.home() / ".cache" / "safetune"))
    tok = AutoTokenizer.from_pretrained(str(home / "models"), gguf_file=GGUF_NAME)
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    cases = []
    for conv in CONVERSATIONS:
        ids = tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=False, return_dict=False)
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        mask = [0] * len(ids)
        for i, m in enumerate(conv):
            if m["role"] != "assistant":
                continue
            prefix = tok.apply_chat_template(conv[:i], tokenize=True, add_generation_prompt=True, return_dict=False)
            upto = tok.apply_chat_template(conv[: i + 1], tokenize=True, add_generation_prompt=False, return_dict=False)
            if isinstance(prefix, dict):
                prefix, upto = prefix["input_ids"], upto["input_ids"]
            assert upto[: len(prefix)] == prefix
            # The assistant content and its end-of-turn token carry loss; the newline after it does not.
            end = upto.index(im_end, len(prefix)) + 1
            for p in range(len(prefix), end):
                mask[p] = 1
        cases.append({"messages": conv, "ids": list(ids), "mask": mask})
    (out / "loss_mask.json").write_text(json.dumps(cases, ensure_ascii=False))
