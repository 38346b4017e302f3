"""LoRA reference fixtures made by PEFT: a Linear with two adapters (one rsLoRA) and its outputs,
the merged weight, and PEFT's target selection / rank_pattern on a tiny Llama."""
import json
import pathlib

import numpy as np
import torch
from torch import nn


def _save(out: pathlib.Path, name: str, t: torch.Tensor, shapes: dict) -> None:
    a = t.detach().to(torch.float32).contiguous().numpy()
    (out / f"{name}.bin").write_bytes(a.astype("<f4").tobytes())
    shapes[name] = list(a.shape)


def _linear_fixture(out: pathlib.Path) -> None:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(1234)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(24, 16, bias=True)

        def forward(self, x):
            return self.proj(x)

    model = Tiny()
    W0 = model.proj.weight.detach().clone()
    bias = model.proj.bias.detach().clone()
    x = torch.randn(2, 3, 24)
    with torch.no_grad():
        y_base = model(x)

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["proj"]),
                                adapter_name="safety")
    peft_model.add_adapter("task", LoraConfig(r=6, lora_alpha=12, use_rslora=True,
                                              target_modules=["proj"]))
    layer = peft_model.base_model.model.proj
    assert isinstance(layer, LoraLayer)
    with torch.no_grad():
        for name in ("safety", "task"):
            layer.lora_B[name].weight.normal_(0.0, 0.5)
    peft_model.eval()

    outputs = {}
    with torch.no_grad():
        for active in (["safety"], ["task"], ["safety", "task"]):
            layer.set_adapter(active)
            outputs["+".join(active)] = peft_model(x)
        layer.set_adapter(["safety", "task"])
        merged = peft_model.merge_and_unload()
        W_merged = merged.proj.weight.detach().clone()

    shapes: dict = {}
    _save(out, "x", x, shapes)
    _save(out, "W", W0, shapes)
    _save(out, "bias", bias, shapes)
    _save(out, "y_base", y_base, shapes)
    for name in ("safety", "task"):
        _save(out, f"A_{name}", layer.lora_A[name].weight, shapes)
        _save(out, f"B_{name}", layer.lora_B[name].weight, shapes)
    _save(out, "y_safety", outputs["safety"], shapes)
    _save(out, "y_task", outputs["task"], shapes)
    _save(out, "y_both", outputs["safety+task"], shapes)
    _save(out, "W_merged", W_merged, shapes)
    meta = {
        "shapes": shapes,
        "adapters": {
            "safety": {"r": 4, "alpha": 8, "use_rslora": False, "scaling": float(layer.scaling["safety"])},
            "task": {"r": 6, "alpha": 12, "use_rslora": True, "scaling": float(layer.scaling["task"])},
        },
    }
    (out / "linear.json").write_text(json.dumps(meta, indent=1))


def _targets_fixture(out: pathlib.Path) -> None:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    cases = {
        "suffixes": dict(target_modules=["q_proj", "v_proj"]),
        "regex": dict(target_modules=r".*layers\.1\.(self_attn\.(k|o)_proj|mlp\.down_proj)"),
        "all_linear": dict(target_modules="all-linear",
                           rank_pattern={"q_proj": 2, r"layers\.1\.mlp\.up_proj": 6},
                           alpha_pattern={"down_proj": 3.0}),
    }
    result = {}
    for case, kwargs in cases.items():
        torch.manual_seed(0)
        base = LlamaForCausalLM(cfg)
        names = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)]
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, **kwargs))
        prefix = "base_model.model."
        targeted = {}
        for n, m in model.named_modules():
            if isinstance(m, LoraLayer):
                short = n[len(prefix):] if n.startswith(prefix) else n
                targeted[short] = {"r": m.r["default"], "alpha": m.lora_alpha["default"]}
        result[case] = {"config": {k: v for k, v in kwargs.items()}, "linear_names": names,
                        "targeted": targeted}
    (out / "targets.json").write_text(json.dumps(result, indent=1))


def make(out_dir: pathlib.Path) -> None:
    _linear_fixture(out_dir)
    _targets_fixture(out_dir)


if __name__ == "__main__":
    import sys
    d = pathlib.Path(sys.argv[1])
    d.mkdir(parents=True, exist_ok=True)
    make(d)
