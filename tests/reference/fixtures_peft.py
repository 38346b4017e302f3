"""PEFT reference for adapter files: a tiny Llama, two PEFT LoRA adapters with random non-zero B
(one rsLoRA with a rank pattern), and the logits PEFT computes with one and with both active."""
import pathlib

IDS = [[1, 5, 9, 23, 7, 64, 3, 11]]


def tiny_base(out: pathlib.Path):
    """A tiny random Llama (GQA: 4 heads, 2 kv heads; seed 0) saved to out/base; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    base = LlamaForCausalLM(cfg).eval()
    base.save_pretrained(out / "base", safe_serialization=True)
    return base


def make(out: pathlib.Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    base = tiny_base(out)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        base_logits = base(ids).logits

    a_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                       rank_pattern={"down_proj": 2}, task_type="CAUSAL_LM")
    b_cfg = LoraConfig(r=8, lora_alpha=4, target_modules=["q_proj", "o_proj", "gate_proj"],
                       use_rslora=True, task_type="CAUSAL_LM")
    model = get_peft_model(base, a_cfg, adapter_name="a")
    model.add_adapter("b", b_cfg)
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name or "lora_A" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.eval()
    model.set_adapter("a")
    model.save_pretrained(out / "adapters", selected_adapters=["a", "b"])
    with torch.no_grad():
        logits_a = model(ids).logits
        # Both adapters at once: PEFT's LoraModel accepts a list of active adapters.
        model.base_model.set_adapter(["a", "b"])
        logits_ab = model(ids).logits
    save_file({"ids": ids, "base": base_logits.contiguous(), "a": logits_a.contiguous(),
               "ab": logits_ab.contiguous()}, str(out / "logits.safetensors"))
