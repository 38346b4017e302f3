"""Writes a random Qwen2-0.5B-shaped model (hidden 896, 24 layers, 14 query / 2 key-value heads,
intermediate 4864, tied embeddings, 402M parameters with SmolLM2's 49k vocabulary) as a bf16
Hugging Face directory, for GPU step and memory measurements where no registry is reachable.
With --tiny it writes the tiny random Llama of scripts/make_tiny_model.py instead (hidden 64, 2
layers), so that a staged GPU folder need not carry it.
Usage: make_q05_model.py TOKENIZER_DIR OUT_DIR [--tiny]   (TOKENIZER_DIR: any directory with tokenizer files)"""
import pathlib
import sys

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM


def main() -> int:
    tok_dir, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if "--tiny" in sys.argv[3:]:
        tiny = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=512, tie_word_embeddings=True, **special))
        tiny.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        print(f"{out}: tiny Llama")
        return 0
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                      rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, bf16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
