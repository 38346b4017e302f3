"""Reference fixtures for the model core: tiny random Llama/Qwen2 models built and run by transformers.

For each model, out_dir/<name>/ is the save_pretrained directory (config.json + model.safetensors)
and out_dir/<name>_ref.safetensors holds what transformers computed on it:
  ids [1,T], logits [1,T,V]                 one prompt, fp32 on CPU
  batch_ids [2,T], batch_mask [2,T],        two prompts of different lengths, LEFT padded with 0
  batch_logits [2,T,V]
  greedy [1,T+32]                           generate(do_sample=False) on `ids`, no stop token
  greedy_short [1,Ts+32]                    the same for the shorter prompt alone
  greedy_rep [1,T+32]                       greedy with repetition_penalty=1.3
  batch_greedy [2,T+32]                     generate on the left-padded batch

and out_dir/<name>_info.json the parameter count transformers reports. smollm2_ref.safetensors
holds transformers' logits (ids [1,16], logits [1,16,V]) and 32 greedy tokens for the real
SmolLM2-135M-Instruct Q4_1 GGUF, loaded by transformers itself.

Run as a script, `check-export DIR REF` loads an exported directory with transformers and exits 0
when its logits equal the reference ones (used by the C++ export test).
"""
import json
import os
import pathlib
import sys

import torch

NEW_TOKENS = 32
VOCAB = 256

MODELS = {
    # MHA, with attention_bias and mlp_bias so Llama's optional biases are covered.
    "llama_mha": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, attention_bias=True,
                      mlp_bias=True, tie_word_embeddings=False),
    # GQA 4:1 with llama3 frequency scaling; original_max_position_embeddings is small so that
    # all three frequency bands (kept, smoothed, divided) occur with head_dim 8.
    "llama_gqa_llama3": dict(arch="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                             num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False,
                             rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                              "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 64}),
    # Tied embeddings and head_dim (24) != hidden_size / heads (16).
    "llama_tied_headdim": dict(arch="llama", hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=24, tie_word_embeddings=True),
    # Qwen2: q/k/v bias always, GQA 7:1, tied.
    "qwen2_gqa7": dict(arch="qwen2", hidden_size=56, intermediate_size=112, num_hidden_layers=2,
                       num_attention_heads=7, num_key_value_heads=1, tie_word_embeddings=True),
    "qwen2_untied": dict(arch="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
}


def build(name, spec, seed):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(spec)
    arch = spec.pop("arch")
    common = dict(vocab_size=VOCAB, max_position_embeddings=256, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        config = LlamaConfig(**common, **spec)
        cls = LlamaForCausalLM
    else:
        config = Qwen2Config(**common, **spec)
        cls = Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = cls(config).eval().float()
    # Default init (std 0.02) makes near-tied logits, so greedy parity would hinge on rounding.
    # Larger weights, and non-trivial norm weights and biases, make the comparison meaningful.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / (p.shape[-1] ** 0.5) * 1.5)
    return model


def generate(model, ids, mask=None, **extra):
    from transformers import GenerationConfig

    # transformers falls back to the model's eos id when the call passes None, and min_new_tokens
    # would suppress that id instead; so generation runs with the model's eos cleared.
    model.generation_config.eos_token_id = None
    model.config.eos_token_id = None
    gc = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS,
                          eos_token_id=None, pad_token_id=0, bos_token_id=1, **extra)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask if mask is not None else torch.ones_like(ids),
                             generation_config=gc)
    assert out.shape[1] == ids.shape[1] + NEW_TOKENS, out.shape
    return out


def make(out_dir: pathlib.Path):
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    for seed, (name, spec) in enumerate(MODELS.items()):
        model = build(name, spec, 1000 + seed)
        model.save_pretrained(out_dir / name, safe_serialization=True)
        g = torch.Generator().manual_seed(7 + seed)
        ids = torch.randint(3, VOCAB, (1, 12), generator=g)
        short = torch.randint(3, VOCAB, (1, 7), generator=g)
        batch_ids = torch.zeros(2, 12, dtype=torch.long)
        batch_ids[0] = ids[0]
        batch_ids[1, 5:] = short[0]
        batch_mask = torch.ones(2, 12, dtype=torch.long)
        batch_mask[1, :5] = 0
        with torch.no_grad():
            logits = model(ids).logits
            batch_logits = model(batch_ids, attention_mask=batch_mask).logits
        save_file({
            "ids": ids.contiguous(), "logits": logits.float().contiguous(),
            "batch_ids": batch_ids, "batch_mask": batch_mask,
            "batch_logits": batch_logits.float().contiguous(),
            "greedy": generate(model, ids), "greedy_short": generate(model, short),
            "batch_greedy": generate(model, batch_ids, batch_mask),
            "greedy_rep": generate(model, ids, repetition_penalty=1.3),
        }, str(out_dir / f"{name}_ref.safetensors"))
        info = {"num_parameters": model.num_parameters(), "model_type": model.config.model_type}
        (out_dir / f"{name}_info.json").write_text(json.dumps(info))
    make_smollm2(out_dir)


def smollm2_path():
    home = pathlib.Path(os.environ.get("SAFETUNE_HOME", pathlib.Path.home() / ".cache" / "safetune"))
    return home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def make_smollm2(out_dir):
    """transformers' own GGUF loading (dequantized to fp32) on the real model: a 16-token prompt."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    path = smollm2_path()
    if not path.exists():
        print(f"fixtures: model: {path} missing, the SmolLM2 tests will fail", file=sys.stderr)
        return
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32).eval()
    # "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in SmolLM2's vocabulary
    # would need the tokenizer; fixed ids from the same range exercise the model just as well.
    g = torch.Generator().manual_seed(2024)
    ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=g)
    with torch.no_grad():
        logits = model(ids).logits
    greedy = generate(model, ids)
    save_file({"ids": ids, "logits": logits.float().contiguous(), "greedy": greedy},
              str(out_dir / "smollm2_ref.safetensors"))


def check_export(model_dir, ref_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ref = load_file(ref_path)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ref["ids"]).logits
    err = (logits - ref["logits"]).abs().max().item()
    print(f"export max abs logits error: {err:.3g}")
    return 0 if err <= 1e-5 else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "check-export":
        sys.exit(check_export(sys.argv[2], sys.argv[3]))
    print("usage: fixtures_model.py check-export MODEL_DIR REF.safetensors", file=sys.stderr)
    sys.exit(2)
