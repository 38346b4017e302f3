"""Regenerates the fuzz seed corpus (small files written by the reference packages).

Usage: python tests/fuzz/make_corpus.py   (needs numpy, safetensors, gguf; the output is committed)
"""
import pathlib

import numpy as np
from safetensors.numpy import save_file

import gguf

here = pathlib.Path(__file__).resolve().parent / "corpus"


def main():
    st = here / "safetensors"
    st.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64),
               "m": np.array([True, False]), "h": np.zeros((0, 2), dtype=np.float16)},
              str(st / "mixed.safetensors"), metadata={"format": "pt"})
    save_file({"x": np.ones(1, dtype=np.uint8)}, str(st / "tiny.safetensors"))
    save_file({}, str(st / "empty.safetensors"))

    g = here / "gguf"
    g.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    w = gguf.GGUFWriter(str(g / "types.gguf"), "llama")
    w.add_uint8("a.u8", 1)
    w.add_int16("a.i16", -2)
    w.add_float64("a.f64", 0.5)
    w.add_bool("a.b", True)
    w.add_array("a.strs", ["x", "yz"])
    w.add_array("a.nested", [[1, 2], [3]])
    w.add_tensor("f", rng.standard_normal((2, 4)).astype(np.float32))
    w.add_tensor("q8", gguf.quants.quantize(rng.standard_normal((1, 32)).astype(np.float32),
                                            gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q41", gguf.quants.quantize(rng.standard_normal((1, 32)).astype(np.float32),
                                             gguf.GGMLQuantizationType.Q4_1),
                 raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    w = gguf.GGUFWriter(str(g / "k.gguf"), "qwen2")
    w.add_custom_alignment(64)
    w.add_tensor("q6k", np.zeros((1, 210), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q6_K)
    w.add_tensor("q4k", np.zeros((1, 144), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
