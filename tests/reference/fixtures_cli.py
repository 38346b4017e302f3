"""References for the adapter commands (merge, export gguf-lora, project): a tiny Llama, PEFT adapters
with random non-zero factors, and the logits of PEFT's merge_and_unload of two of them."""
import pathlib

IDS = [[1, 5, 9, 23, 7, 64, 3, 11, 42, 17]]


def make(out: pathlib.Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from fixtures_peft import tiny_base  # the same tiny GQA Llama (make_fixtures puts this folder on sys.path)

    # GQA (4 heads, 2 kv heads) so the GGUF Q/K row permutation is exercised for both head counts.
    base = tiny_base(out)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        base_logits = base(ids).logits

    def randomise(model, gen, names):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if any(f".{n}." in name for n in names) and ("lora_A" in name or "lora_B" in name):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)

    # Two adapters to merge: plain LoRA with a rank pattern (q, k, v, down) and rsLoRA (q, o, gate).
    a_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
                       rank_pattern={"down_proj": 2}, task_type="CAUSAL_LM")
    b_cfg = LoraConfig(r=8, lora_alpha=4, target_modules=["q_proj", "o_proj", "gate_proj"],
                       use_rslora=True, task_type="CAUSAL_LM")
    model = get_peft_model(base, a_cfg, adapter_name="a")
    model.add_adapter("b", b_cfg)
    # Not merged: rsLoRA with a rank pattern, whose scales one GGUF alpha cannot express.
    model.add_adapter("c", LoraConfig(r=8, lora_alpha=16, target_modules=["k_proj", "up_proj"], use_rslora=True,
                                      rank_pattern={"up_proj": 2}, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(1)
    randomise(model, gen, ["a", "b", "c"])
    model.eval()
    model.save_pretrained(out / "adapters", selected_adapters=["a", "b", "c"])
    model.base_model.set_adapter(["a", "b"])
    with torch.no_grad():
        unmerged = model(ids).logits
    merged_model = model.merge_and_unload()
    with torch.no_grad():
        merged = merged_model(ids).logits
    save_file({"ids": ids, "base": base_logits.contiguous(), "merged": merged.contiguous(), "unmerged": unmerged.contiguous()},
              str(out / "logits.safetensors"))

    # Safe LoRA inputs: safety and task adapters on q/v of both layers. In layer 0 the task update
    # lies (almost) in the safety adapter's column space (cosine near 1); in layer 1 it is random.
    base2 = LlamaForCausalLM.from_pretrained(out / "base").eval()
    s_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    pm = get_peft_model(base2, s_cfg, adapter_name="safety")
    pm.add_adapter("task", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(2)
    randomise(pm, gen, ["safety", "task"])
    with torch.no_grad():
        for layer in pm.base_model.model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.v_proj):
                if layer is pm.base_model.model.model.layers[0]:
                    bs = proj.lora_B["safety"].weight
                    mix = torch.randn(bs.shape[1], bs.shape[1], generator=gen)
                    proj.lora_B["task"].weight.copy_(bs @ mix + 0.01 * torch.randn(bs.shape, generator=gen))
    pm.save_pretrained(out / "project", selected_adapters=["safety", "task"])
