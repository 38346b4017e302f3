"""Writes a tiny random Llama (Hugging Face directory) that uses SmolLM2's real tokenizer and chat
template, for fast CPU runs of the whole pipeline (configs/tiny_two_stage.yaml, tests).
Usage: make_tiny_model.py SMOLLM2_GGUF OUT_DIR"""
import pathlib
import sys


def main() -> int:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    tmp = out.with_name(out.name + ".part")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
