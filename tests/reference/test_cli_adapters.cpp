// The adapter commands against their references: forward --adapters and merge against PEFT (and
// transformers loading the merged directory), export gguf-lora against the gguf package's reader
// and the PEFT tensors, project against a numpy computation of Safe LoRA.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>

#include "safetune/io/atomic_file.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
fs::path fix() { return test::fixture_dir() / "cli"; }
const char* kIds = "1,5,9,23,7,64,3,11,42,17";

at::Tensor ref(const std::string& key) {
  return test::tensor_in(fix() / "logits.safetensors", key);
}
at::Tensor logits_of(const fs::path& file) { return test::tensor_in(file, "logits"); }
double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Runs a Python check script (reference packages) with arguments; returns its exit code.
int python(const test::TempDir& tmp, const std::string& name, const std::string& code,
           const std::vector<std::string>& args) {
  std::ofstream(tmp / name) << code;
  std::string cmd = test::python().string() + " " + (tmp / name).string();
  for (const auto& a : args) cmd += " '" + a + "'";
  return std::system(cmd.c_str());
}
}  // namespace

TEST_CASE("cli adapters: forward --adapters gives PEFT's logits; the inference policy holds",
          "[cli][reference]") {
  test::TempDir tmp;
  const std::string base = (fix() / "base").string();
  const std::string ab =
      (fix() / "adapters" / "a").string() + "," + (fix() / "adapters" / "b").string();
  auto r = test::run_cli({"forward", base, "--ids", kIds, "--adapters", ab, "--out",
                          (tmp / "ab.safetensors").string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("adapters: a b"));
  double d = max_diff(logits_of(tmp / "ab.safetensors"), ref("unmerged"));
  INFO("max |safetune forward - PEFT| with a+b: " << d);
  CHECK(d < 1e-4);

  // A required_at_inference adapter cannot be switched off without the explicit override.
  {
    auto m = model::load(fix() / "base");
    lora::ModelAdapters ad(*m);
    ad.load_peft(fix() / "adapters" / "a", "safety");
    ad.set_required_at_inference("safety", true);
    ad.save_peft("safety", tmp / "safety", base);
  }
  const std::string req = (tmp / "safety").string();
  auto refused = test::run_cli(
      {"forward", base, "--ids", kIds, "--adapters", req, "--disable-adapter", "safety"});
  CHECK(refused.exit_code == 2);
  CHECK_THAT(refused.err, Contains("'safety' is required at inference") &&
                              Contains("--override-inference-policy"));
  auto forced = test::run_cli({"forward", base, "--ids", kIds, "--adapters", req,
                               "--disable-adapter", "safety", "--override-inference-policy",
                               "--out", (tmp / "off.safetensors").string()});
  REQUIRE(forced.exit_code == 0);
  CHECK_THAT(forced.err, Contains("inference policy override"));
  CHECK(max_diff(logits_of(tmp / "off.safetensors"), ref("base")) <
        1e-4);  // transformers' base logits
  auto unknown = test::run_cli(
      {"forward", base, "--ids", kIds, "--adapters", req, "--disable-adapter", "nope"});
  CHECK(unknown.exit_code == 2);
  CHECK_THAT(unknown.err, Contains("no loaded adapter is named 'nope'"));
  auto missing =
      test::run_cli({"forward", base, "--ids", kIds, "--adapters", (tmp / "absent").string()});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Contains("adapter_config.json"));
}

TEST_CASE("cli adapters: merge writes a directory transformers loads with PEFT's merged logits",
          "[cli][reference]") {
  test::TempDir tmp;
  fs::copy(fix() / "base", tmp / "base", fs::copy_options::recursive);
  test::write_text(tmp / "base" / "tokenizer.json", "{\"model\": {\"type\": \"BPE\"}}\n");
  test::write_text(tmp / "base" / "tokenizer_config.json", "{\"eos_token\": \"</s>\"}\n");
  const std::string ab =
      (fix() / "adapters" / "a").string() + "," + (fix() / "adapters" / "b").string();
  auto r = test::run_cli(
      {"merge", (tmp / "base").string(), "--adapters", ab, "--out", (tmp / "merged").string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("merged a") && Contains("merged b") && Contains("tokenizer.json"));
  CHECK(io::read_file(tmp / "merged" / "tokenizer.json") ==
        io::read_file(tmp / "base" / "tokenizer.json"));
  CHECK(fs::exists(tmp / "merged" / "tokenizer_config.json"));
  auto r16 = test::run_cli({"merge", (tmp / "base").string(), "--adapters", ab, "--out",
                            (tmp / "merged16").string(), "--dtype", "bfloat16"});
  REQUIRE(r16.exit_code == 0);

  io::safetensors_save(tmp / "ids.safetensors", {{"ids", ref("ids")}});
  CHECK(python(tmp, "check_merge.py", R"(
import sys, torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
fix, tmp = sys.argv[1], sys.argv[2]
ref = load_file(fix + "/logits.safetensors")
m = AutoModelForCausalLM.from_pretrained(tmp + "/merged").eval()
with torch.no_grad():
    ours = m(ref["ids"]).logits
d = (ours - ref["merged"]).abs().max().item()
print("max |transformers(merged dir) - PEFT merge_and_unload|", d)
m16 = AutoModelForCausalLM.from_pretrained(tmp + "/merged16", dtype="auto").eval()
assert m16.dtype == torch.bfloat16, m16.dtype
with torch.no_grad():
    d16 = (m16(ref["ids"]).logits.float() - ref["merged"]).abs().max().item()
print("bf16 merged dir:", d16)
sys.exit(0 if d < 1e-4 and d16 < 0.1 else 1)
)",
               {fix().string(), tmp.path().string()}) == 0);

  auto no_adapters =
      test::run_cli({"merge", (tmp / "base").string(), "--out", (tmp / "x").string()});
  CHECK(no_adapters.exit_code == 2);
  auto bad = test::run_cli({"merge", (tmp / "base").string(), "--adapters", (tmp / "none").string(),
                            "--out", (tmp / "x").string()});
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.err, Contains("adapter_config.json"));
}

TEST_CASE("cli adapters: export gguf-lora matches llama.cpp's layout and the PEFT tensors",
          "[cli][reference]") {
  test::TempDir tmp;
  const std::string base = (fix() / "base").string();
  for (auto [name, dtype] : {std::pair{"a", "float32"}, {"b", "float32"}, {"b", "float16"}}) {
    const std::string out = (tmp / (std::string(name) + "-" + dtype + ".gguf")).string();
    auto r = test::run_cli({"export", (fix() / "adapters" / name).string(), "--format", "gguf-lora",
                            "--model", base, "--out", out, "--dtype", dtype});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  // Independent check: gguf's reader, PEFT's files, the converter's permutation written out in
  // numpy. rsLoRA with a rank pattern: one alpha cannot carry both scales, the rest is folded into
  // lora_b.
  auto c = test::run_cli({"export", (fix() / "adapters" / "c").string(), "--format", "gguf-lora",
                          "--model", base, "--out", (tmp / "c.gguf").string()});
  REQUIRE(c.exit_code == 0);
  CHECK_THAT(c.out, Contains("2 modules rescaled"));
  CHECK_THAT(c.err, Contains("folded into their lora_b"));
  CHECK(python(tmp, "check_gguf.py", R"(
import sys, json, math
import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from safetensors.numpy import load_file
fix, tmp = sys.argv[1], sys.argv[2]
cfg = json.load(open(fix + "/base/config.json"))
n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}
def permute(w, h):  # convert_hf_to_gguf.py's LlamaModel.permute on the rows
    return w.reshape(h, 2, w.shape[0] // h // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0].name == "STRING" else v[0]
ok = True
for name, dtype in [("a", "float32"), ("b", "float32"), ("b", "float16")]:
    acfg = json.load(open(f"{fix}/adapters/{name}/adapter_config.json"))
    peft = load_file(f"{fix}/adapters/{name}/adapter_model.safetensors")
    r = GGUFReader(f"{tmp}/{name}-{dtype}.gguf")
    assert field(r, "general.architecture") == "llama"
    assert field(r, "general.type") == "adapter"
    assert field(r, "adapter.type") == "lora"
    assert r.fields["adapter.lora.alpha"].types[0].name == "FLOAT32"
    alpha = float(field(r, "adapter.lora.alpha"))
    want_alpha = acfg["lora_alpha"] * (math.sqrt(acfg["r"]) if acfg["use_rslora"] else 1.0)
    assert abs(alpha - want_alpha) <= 1e-6 * want_alpha, (alpha, want_alpha)
    want_type = GGMLQuantizationType.F32 if dtype == "float32" else GGMLQuantizationType.F16
    tensors = {t.name: t for t in r.tensors}
    seen = set()
    for key, val in peft.items():
        stem = key[len("base_model.model.model.layers."):]
        layer, rest = stem.split(".", 1)
        part = rest.split(".lora_")[0]
        ab = "lora_a" if ".lora_A." in key else "lora_b"
        gname = f"blk.{layer}.{parts[part]}.weight.{ab}"
        t = tensors[gname]
        seen.add(gname)
        assert t.tensor_type == want_type, (gname, t.tensor_type)
        assert list(t.shape) == list(val.shape[::-1]), (gname, t.shape, val.shape)  # ggml ne order
        want = val.astype(np.float32)
        if ab == "lora_b" and part in ("self_attn.q_proj", "self_attn.k_proj"):
            want = permute(want, n_head if part == "self_attn.q_proj" else n_kv)
        got = np.asarray(t.data).reshape(val.shape)
        want = want.astype(np.float16) if dtype == "float16" else want
        err = np.abs(got.astype(np.float64) - want.astype(np.float64)).max()
        if err != 0:
            print("mismatch", name, dtype, gname, err); ok = False
    assert seen == set(tensors), set(tensors) - seen
    print(name, dtype, "alpha", alpha, "tensors", len(tensors))
# Adapter c: llama.cpp's delta (alpha / r) * lora_b @ lora_a must equal PEFT's s * B @ A per module.
acfg = json.load(open(f"{fix}/adapters/c/adapter_config.json"))
peft = load_file(f"{fix}/adapters/c/adapter_model.safetensors")
r = GGUFReader(f"{tmp}/c.gguf")
alpha = float(field(r, "adapter.lora.alpha"))
tensors = {t.name: np.asarray(t.data) for t in r.tensors}
assert len(tensors) == 8, sorted(tensors)
for key in [k for k in peft if ".lora_A." in k]:
    stem = key[len("base_model.model.model.layers."):]
    layer, rest = stem.split(".", 1)
    part = rest.split(".lora_")[0]
    A, B = peft[key].astype(np.float64), peft[key.replace("lora_A", "lora_B")].astype(np.float64)
    rank = A.shape[0]
    s = acfg["lora_alpha"] / math.sqrt(rank)
    if part == "self_attn.k_proj":
        B = permute(B, n_kv)
    g = f"blk.{layer}.{parts[part]}.weight"
    ours = (alpha / tensors[g + ".lora_a"].shape[0]) * tensors[g + ".lora_b"].astype(np.float64) @ tensors[g + ".lora_a"].astype(np.float64)
    err = np.abs(ours - s * B @ A).max() / np.abs(s * B @ A).max()
    print("c", g, "rank", rank, "relative error of the delta", err)
    ok = ok and err < 1e-6
sys.exit(0 if ok else 1)
)",
               {fix().string(), tmp.path().string()}) == 0);

  auto bad = test::run_cli({"export", (fix() / "adapters" / "a").string(), "--format", "ggml",
                            "--model", base, "--out", (tmp / "x.gguf").string()});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Contains("unknown export format 'ggml'"));
}

TEST_CASE("cli adapters: project applies Safe LoRA as numpy computes it", "[cli][reference]") {
  test::TempDir tmp;
  const std::string out = (tmp / "projected").string();
  auto r = test::run_cli({"project", "--safety", (fix() / "project" / "safety").string(), "--task",
                          (fix() / "project" / "task").string(), "--out", out, "--threshold", "0.6",
                          "--model", (fix() / "base").string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("projected 2 of 4 layers"));
  CHECK(python(tmp, "check_project.py", R"(
import sys, json
import numpy as np
from safetensors.numpy import load_file
fix, out, t = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = load_file(fix + "/project/safety/adapter_model.safetensors")
task = load_file(fix + "/project/task/adapter_model.safetensors")
got = load_file(out + "/adapter_model.safetensors")
summary = {l["module"]: l for l in json.load(open(out + "/safe_lora.json"))["layers"]}
ok = True
for k in sorted(task):
    if ".lora_B." not in k:
        if np.abs(got[k] - task[k]).max() != 0: print("A changed", k); ok = False
        continue
    module = k[len("base_model.model."):].split(".lora_B.")[0]
    Bt = task[k].astype(np.float64); At = task[k.replace("lora_B", "lora_A")].astype(np.float64)
    U, S, _ = np.linalg.svd(s[k].astype(np.float64), full_matrices=False)
    Q = U[:, S > S.max() * 1e-6]
    dW = Bt @ At
    PdW = Q @ (Q.T @ dW)
    cos = (dW * PdW).sum() / (np.linalg.norm(dW) * np.linalg.norm(PdW))
    proj = cos < t
    want = (Q @ (Q.T @ Bt)) if proj else Bt
    e = np.abs(got[k].astype(np.float64) - want).max()
    l = summary[module]
    print(module, "cos", cos, "ours", l["cosine"], "projected", proj, l["projected"], "max |B - numpy|", e)
    ok = ok and abs(cos - l["cosine"]) < 1e-9 and proj == l["projected"] and e < 1e-6
sys.exit(0 if ok and len(summary) == 4 else 1)
)",
               {fix().string(), out, "0.6"}) == 0);

  auto missing = test::run_cli({"project", "--safety", (tmp / "none").string(), "--task",
                                (fix() / "project" / "task").string(), "--out", out, "--model",
                                (fix() / "base").string()});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Contains("adapter_config.json"));
}
