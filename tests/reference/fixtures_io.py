"""Reference files for lib/io: safetensors written by the `safetensors` package, GGUF by `gguf`.

Every expected tensor is saved beside as raw little-endian bytes (<name>.bin) plus a JSON manifest
with dtype and shape, so the C++ tests compare bytes, not this code's own earlier output.
"""
import json
import math
import pathlib

import numpy as np
import torch
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import save_file as torch_save_file


def _expected(out: pathlib.Path, tensors: dict, manifest: dict, prefix: str):
    for name, t in tensors.items():
        fname = f"{prefix}{name}.bin"
        if isinstance(t, torch.Tensor):
            raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            dtype = str(t.dtype).replace("torch.", "")
            shape = list(t.shape)
        else:
            raw = np.ascontiguousarray(t).tobytes()
            dtype = str(t.dtype)
            shape = list(t.shape)
        (out / fname).write_bytes(raw)
        manifest[name] = {"file": fname, "dtype": dtype, "shape": shape}


def make_safetensors(out: pathlib.Path):
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    tensors = {
        "model.embed_tokens.weight": torch.randn(7, 5, generator=g),
        "layers.0.f16": torch.randn(3, 4, generator=g).half(),
        "layers.0.bf16": torch.randn(2, 3, 4, generator=g).bfloat16(),
        "f64": torch.randn(3, generator=g).double(),
        "ids": torch.randint(-1000, 1000, (4, 2), generator=g, dtype=torch.int64),
        "i32": torch.randint(-1000, 1000, (5,), generator=g, dtype=torch.int32),
        "i16": torch.randint(-1000, 1000, (3,), generator=g, dtype=torch.int16),
        "i8": torch.randint(-100, 100, (3,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (6,), generator=g, dtype=torch.uint8),
        "mask": torch.rand(3, 3, generator=g) > 0.5,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    manifest = {}
    torch_save_file(tensors, str(out / "mixed.safetensors"), metadata={"format": "pt", "note": "héllo"})
    _expected(out, tensors, manifest, "mixed_")
    (out / "mixed.json").write_text(json.dumps({"tensors": manifest,
                                                 "metadata": {"format": "pt", "note": "héllo"}}))

    # numpy writer, no metadata
    arr = {"a": np.arange(12, dtype=np.float32).reshape(3, 4) / 7, "b": np.array([1, -2, 3], dtype=np.int64)}
    np_save_file(arr, str(out / "numpy.safetensors"))
    manifest = {}
    _expected(out, arr, manifest, "numpy_")
    (out / "numpy.json").write_text(json.dumps({"tensors": manifest, "metadata": {}}))

    # sharded HF-style directory
    shard_dir = out / "sharded"
    shard_dir.mkdir()
    s1 = {"model.layers.0.w": torch.randn(4, 4, generator=g), "model.norm.weight": torch.randn(4, generator=g)}
    s2 = {"model.layers.1.w": torch.randn(4, 4, generator=g).bfloat16(), "lm_head.weight": torch.randn(6, 4, generator=g)}
    torch_save_file(s1, str(shard_dir / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    torch_save_file(s2, str(shard_dir / "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    weight_map = {k: "model-00001-of-00002.safetensors" for k in s1}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in s2})
    (shard_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2))
    manifest = {}
    _expected(out, {**s1, **s2}, manifest, "sharded_")
    (out / "sharded.json").write_text(json.dumps({"tensors": manifest, "metadata": {}}))


# ---- GGUF -----------------------------------------------------------------------------------

def _save_f32(out: pathlib.Path, name: str, arr: np.ndarray, manifest: dict, **extra):
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    fname = name.replace("/", "_") + ".f32"
    (out / fname).write_bytes(arr.tobytes())
    manifest[name] = {"file": fname, "shape": list(arr.shape), **extra}


def _random_k_blocks(rng, n_blocks: int, qtype) -> np.ndarray:
    """Random but valid raw K-quant blocks: random bytes with finite fp16 scales patched in."""
    import gguf
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if qtype in (gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q5_K):
        scales = rng.uniform(0.001, 0.05, size=(n_blocks, 2)).astype(np.float16)  # d, dmin
        raw[:, 0:4] = scales.view(np.uint8).reshape(n_blocks, 4)
    elif qtype == gguf.GGMLQuantizationType.Q6_K:
        d = rng.uniform(0.001, 0.05, size=(n_blocks, 1)).astype(np.float16)
        raw[:, 208:210] = d.view(np.uint8).reshape(n_blocks, 2)
    return raw


def make_gguf_types(out: pathlib.Path):
    """One tensor per supported ggml type, plus gguf's own dequantization of each."""
    import gguf
    from gguf import GGMLQuantizationType as T
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(out / "types.gguf"), "llama")
    manifest = {}
    for qtype, shape in [(T.F32, (3, 5, 4)), (T.F16, (6, 8)), (T.BF16, (4, 64)), (T.Q8_0, (4, 96)),
                         (T.Q4_0, (5, 64)), (T.Q4_1, (3, 128)), (T.Q5_0, (2, 64)), (T.Q5_1, (3, 32)),
                         (T.Q4_K, (3, 512)), (T.Q5_K, (2, 256)), (T.Q6_K, (2, 768))]:
        name = f"t_{qtype.name.lower()}"
        if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
            block, _ = gguf.GGML_QUANT_SIZES[qtype]
            n_blocks = int(np.prod(shape)) // block
            raw = _random_k_blocks(rng, n_blocks, qtype).reshape(shape[0], -1)
        else:
            data = rng.standard_normal(shape).astype(np.float32)
            raw = gguf.quants.quantize(data, qtype)
        deq = gguf.quants.dequantize(raw, qtype)
        assert deq.shape == shape, (qtype, deq.shape)
        assert np.isfinite(deq).all()
        if qtype == T.F32:
            w.add_tensor(name, raw)
        else:
            w.add_tensor(name, raw, raw_dtype=qtype)
        _save_f32(out, name, deq, manifest, type=qtype.name)
    # a type this reader knows but cannot dequantize
    w.add_tensor("t_q2_k", np.zeros((1, 84), dtype=np.uint8), raw_dtype=T.Q2_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    (out / "types.json").write_text(json.dumps(manifest, indent=1))


def make_gguf_metadata(out: pathlib.Path):
    """Every metadata value type, including typed and nested arrays, with the values as JSON."""
    import gguf
    from gguf import GGUFValueType as V
    w = gguf.GGUFWriter(str(out / "metadata.gguf"), "qwen2")
    values = {
        "t.u8": (255, V.UINT8), "t.i8": (-128, V.INT8), "t.u16": (65535, V.UINT16),
        "t.i16": (-32768, V.INT16), "t.u32": (4294967295, V.UINT32), "t.i32": (-2147483648, V.INT32),
        "t.u64": (18446744073709551615, V.UINT64), "t.i64": (-9223372036854775808, V.INT64),
        "t.f32": (1.5, V.FLOAT32), "t.f64": (-2.000000000001, V.FLOAT64),
        "t.true": (True, V.BOOL), "t.false": (False, V.BOOL), "t.str": ("héllo ✓", V.STRING),
        "t.empty_str": ("", V.STRING),
    }
    for k, (v, t) in values.items():
        w.add_key_value(k, v, t)
    w.add_array("t.strs", ["a", "bb", "", "ü"])
    w.add_array("t.ints", [1, -2, 3])  # int32
    w.add_key_value("t.u64s", [1, 2**63 + 5], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("t.i16s", [-7, 7], V.ARRAY, sub_type=V.INT16)
    w.add_array("t.floats", [0.25, -1.5])
    w.add_key_value("t.f64s", [0.1, 1e300], V.ARRAY, sub_type=V.FLOAT64)
    w.add_array("t.bools", [True, False, True])
    w.add_array("t.nested", [[1, 2], [3], [4, 5, 6]])
    w.add_array("t.nested_str", [["x", "y"], ["z"]])
    w.add_custom_alignment(64)
    w.add_tensor("t", np.arange(10, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expect = {k: {"value": v, "type": t.name} for k, (v, t) in values.items()}
    expect["t.f32"]["value"] = float(np.float32(1.5))
    (out / "metadata.json").write_text(json.dumps(expect, ensure_ascii=False))

    # read back with gguf's reader to be sure the writer produced what we claim
    r = gguf.GGUFReader(str(out / "metadata.gguf"))
    assert r.fields["t.u64"].contents() == 18446744073709551615
    assert r.alignment == 64


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf does to Q/K rows for arch llama (see its LlamaModel.permute)."""
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


_GGUF_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}
_GGUF_PART = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _add_hf_tensors(w, hf: dict, permute_heads=None):
    """Adds HF-named tensors under llama.cpp names; permute_heads=(n_head, n_kv) applies the llama Q/K permutation."""
    for k, v in hf.items():
        if k in _GGUF_GLOBAL:
            g = _GGUF_GLOBAL[k]
        else:
            _, _, i, rest = k.split(".", 3)
            mod, kind = rest.rsplit(".", 1)
            g = f"blk.{i}.{_GGUF_PART[mod]}.{kind}"
        if permute_heads and k.endswith("q_proj.weight"):
            v = _permute(v, permute_heads[0])
        elif permute_heads and k.endswith("k_proj.weight"):
            v = _permute(v, permute_heads[1])
        w.add_tensor(g, np.ascontiguousarray(v))



def make_gguf_models(out: pathlib.Path):
    """Tiny llama (permuted Q/K, GQA, explicit head_dim, untied) and qwen2 (biases, tied) models."""
    import gguf
    from safetensors.numpy import save_file
    rng = np.random.default_rng(11)
    specs = {
        "llama": dict(layers=2, hidden=32, ffn=48, heads=4, kv=2, head_dim=12, vocab=40, tied=False),
        "qwen2": dict(layers=2, hidden=28, ffn=40, heads=4, kv=1, head_dim=7 * 2, vocab=30, tied=True),
    }
    configs = {}
    for arch, s in specs.items():
        hf = {}
        hd = s["head_dim"]
        hf["model.embed_tokens.weight"] = rng.standard_normal((s["vocab"], s["hidden"]))
        for i in range(s["layers"]):
            p = f"model.layers.{i}."
            hf[p + "self_attn.q_proj.weight"] = rng.standard_normal((s["heads"] * hd, s["hidden"]))
            hf[p + "self_attn.k_proj.weight"] = rng.standard_normal((s["kv"] * hd, s["hidden"]))
            hf[p + "self_attn.v_proj.weight"] = rng.standard_normal((s["kv"] * hd, s["hidden"]))
            hf[p + "self_attn.o_proj.weight"] = rng.standard_normal((s["hidden"], s["heads"] * hd))
            if arch == "qwen2":
                hf[p + "self_attn.q_proj.bias"] = rng.standard_normal(s["heads"] * hd)
                hf[p + "self_attn.k_proj.bias"] = rng.standard_normal(s["kv"] * hd)
                hf[p + "self_attn.v_proj.bias"] = rng.standard_normal(s["kv"] * hd)
            hf[p + "mlp.gate_proj.weight"] = rng.standard_normal((s["ffn"], s["hidden"]))
            hf[p + "mlp.up_proj.weight"] = rng.standard_normal((s["ffn"], s["hidden"]))
            hf[p + "mlp.down_proj.weight"] = rng.standard_normal((s["hidden"], s["ffn"]))
            hf[p + "input_layernorm.weight"] = rng.standard_normal(s["hidden"])
            hf[p + "post_attention_layernorm.weight"] = rng.standard_normal(s["hidden"])
        hf["model.norm.weight"] = rng.standard_normal(s["hidden"])
        if not s["tied"]:
            hf["lm_head.weight"] = rng.standard_normal((s["vocab"], s["hidden"]))
        hf = {k: v.astype(np.float32) for k, v in hf.items()}
        save_file(hf, str(out / f"{arch}_hf.safetensors"))

        w = gguf.GGUFWriter(str(out / f"{arch}.gguf"), arch)
        w.add_block_count(s["layers"])
        w.add_embedding_length(s["hidden"])
        w.add_feed_forward_length(s["ffn"])
        w.add_head_count(s["heads"])
        w.add_head_count_kv(s["kv"])
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_rope_freq_base(50000.0 if arch == "llama" else 1000000.0)
        w.add_layer_norm_rms_eps(1e-5 if arch == "llama" else 1e-6)
        w.add_context_length(256)
        w.add_bos_token_id(3)
        w.add_eos_token_id(4)
        w.add_pad_token_id(5)
        _add_hf_tensors(w, hf, (s["heads"], s["kv"]) if arch == "llama" else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        configs[arch] = {**s, "rope_theta": 50000.0 if arch == "llama" else 1000000.0,
                         "rms_eps": float(np.float32(1e-5 if arch == "llama" else 1e-6))}
    (out / "models.json").write_text(json.dumps(configs))


def make_gguf_smollm2(out: pathlib.Path):
    """gguf's dequantization of tensors of the real SmolLM2 Q4_1 file (skipped when it is absent)."""
    import os
    import gguf
    home = pathlib.Path(os.environ.get("SAFETUNE_HOME") or pathlib.Path.home() / ".cache" / "safetune")
    path = home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        return
    r = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in r.tensors}
    manifest = {}
    for name in ["blk.0.ffn_down.weight", "blk.3.attn_q.weight", "blk.3.attn_k.weight", "output_norm.weight"]:
        t = by_name[name]
        deq = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        deq = deq.reshape(shape)
        if name.endswith("attn_q.weight"):
            deq = _unpermute(deq, 9)
        elif name.endswith("attn_k.weight"):
            deq = _unpermute(deq, 3)
        _save_f32(out, name, deq, manifest, type=t.tensor_type.name)
    (out / "smollm2.json").write_text(json.dumps(manifest))


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _llama3_rope_factors(theta: float, dim: int, factor: float, low: float, high: float, old_ctx: int):
    """Per-frequency divisors as llama.cpp's converter writes them to rope_freqs.weight for llama3 scaling."""
    factors = []
    for i in range(0, dim, 2):
        freq = 1.0 / (theta ** (i / dim))
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def make_gguf_llama3_rope(out: pathlib.Path):
    """A tiny Llama with llama3 rope scaling: transformers' logits, and the same weights as a GGUF file
    that stores the scaling the llama.cpp way (rope_freqs.weight, permuted Q/K)."""
    import gguf
    import torch
    import transformers
    from safetensors.numpy import save_file
    torch.manual_seed(5)
    theta, hd, heads, kv, old_ctx = 10000.0, 16, 4, 2, 32
    cfg = transformers.LlamaConfig(
        vocab_size=48, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=hd, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": theta, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": old_ctx})
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    ids = torch.arange(96).remainder(47).unsqueeze(0) + 1
    with torch.no_grad():
        logits = model(ids).logits[0].numpy().astype(np.float32)
    save_file({"ids": ids[0].numpy().astype(np.int64), "logits": logits}, str(out / "llama3_rope_expected.safetensors"))

    w = gguf.GGUFWriter(str(out / "llama3_rope.gguf"), "llama")
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_feed_forward_length(96)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_context_length(256)
    w.add_tensor("rope_freqs.weight", _llama3_rope_factors(theta, hd, 8.0, 1.0, 4.0, old_ctx))
    _add_hf_tensors(w, {k: v.numpy().astype(np.float32) for k, v in model.state_dict().items()}, (heads, kv))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make(out_dir: pathlib.Path):
    make_safetensors(out_dir / "safetensors")
    g = out_dir / "gguf"
    g.mkdir(parents=True, exist_ok=True)
    make_gguf_types(g)
    make_gguf_metadata(g)
    make_gguf_models(g)
    make_gguf_smollm2(g)
    make_gguf_llama3_rope(g)
