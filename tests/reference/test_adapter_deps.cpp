// Adapters that carry their dependencies: a task adapter names the safety adapter it was trained
// with (weights hash, inside its own content hash), every command and the library refuse it alone,
// edits to the metadata are caught, and safety + task pack into one PEFT / GGUF LoRA adapter that
// PEFT (and gguf's reader) reproduce. References: PEFT's logits (fixtures_cli.py) and PEFT itself.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "safetune/io/atomic_file.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/recipes/session.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
fs::path fix() { return test::fixture_dir() / "cli"; }
const char* kIds = "1,5,9,23,7,64,3,11,42,17";

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// PEFT's adapters a (plain LoRA, rank pattern) and b (rsLoRA) of the cli fixture, written by
// safetune as a safety adapter (required at inference) and a task adapter that depends on it;
// `other` is adapter c under the name "safety" (a different safety adapter). Returns the safety
// adapter's weights hash.
std::string write_pair(const fs::path& base, const fs::path& dir) {
  auto m = model::load(base);
  lora::ModelAdapters ad(*m);
  ad.load_peft(fix() / "adapters" / "a", "safety");
  ad.load_peft(fix() / "adapters" / "b", "task");
  ad.load_peft(fix() / "adapters" / "c", "other");
  auto s = ad.factors("safety");
  s.role = lora::AdapterRole::safety;
  s.required_at_inference = true;
  lora::write_peft(s, dir / "safety", base.string());
  auto t = ad.factors("task");
  t.role = lora::AdapterRole::task;
  t.dependencies = {{"safety", ad.weights_sha256("safety")}};
  lora::write_peft(t, dir / "task", base.string());
  auto o = ad.factors("other");
  o.name = "safety";
  o.role = lora::AdapterRole::safety;
  o.required_at_inference = true;
  lora::write_peft(o, dir / "other", base.string());
  return ad.weights_sha256("safety");
}

// Rewrites one key of an adapter's safetensors metadata, leaving the tensors as they are.
void edit_metadata(const fs::path& dir, const std::string& key, const std::string& value) {
  const fs::path file = dir / "adapter_model.safetensors";
  auto meta = io::safetensors_list(file).metadata;
  meta[key] = value;
  io::safetensors_save(file, io::safetensors_load(file), meta);
}

void copy_dir(const fs::path& from, const fs::path& to) {
  fs::copy(from, to, fs::copy_options::recursive);
}

int python(const test::TempDir& tmp, const std::string& name, const std::string& code,
           const std::vector<std::string>& args) {
  std::ofstream(tmp / name) << code;
  std::string cmd = test::python().string() + " " + (tmp / name).string();
  for (const auto& a : args) cmd += " '" + a + "'";
  return std::system(cmd.c_str());
}
}  // namespace

TEST_CASE(
    "adapter deps: forward, merge and export refuse a task adapter without its safety adapter",
    "[deps][reference]") {
  test::TempDir tmp;
  const std::string base = (fix() / "base").string();
  const std::string sha = write_pair(fix() / "base", tmp.path());
  const std::string task = (tmp / "task").string(), safety = (tmp / "safety").string();
  const std::string both = safety + "," + task;

  const std::vector<std::vector<std::string>> alone = {
      {"forward", base, "--ids", kIds, "--adapters", task},
      {"merge", base, "--adapters", task, "--out", (tmp / "m").string()},
      {"export", task, "--format", "gguf-lora", "--model", base, "--out",
       (tmp / "t.gguf").string()},
      {"export", "--adapters", task, "--format", "peft", "--model", base, "--out",
       (tmp / "p").string()},
  };
  for (const auto& args : alone) {
    auto r = test::run_cli(args);
    INFO(args[0] << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(count(r.err, "error:") == 1);
    CHECK_THAT(r.err, Contains("task adapter 'task'") && Contains("adapter 'safety'") &&
                          Contains(sha.substr(0, 16)) && Contains("not loaded"));
    CHECK_FALSE(fs::exists(tmp / "m"));
    CHECK_FALSE(fs::exists(tmp / "t.gguf"));
  }

  // With its safety adapter: PEFT's logits with both active (fixtures_cli.py "unmerged" = a + b).
  auto ok = test::run_cli({"forward", base, "--ids", kIds, "--adapters", both, "--out",
                           (tmp / "ab.safetensors").string()});
  INFO(ok.err);
  REQUIRE(ok.exit_code == 0);
  CHECK(max_diff(test::tensor_in(tmp / "ab.safetensors", "logits"),
                 test::tensor_in(fix() / "logits.safetensors", "unmerged")) < 1e-4);
  CHECK(test::run_cli({"merge", base, "--adapters", both, "--out", (tmp / "merged").string()})
            .exit_code == 0);

  // A safety adapter with other weights under the same name is not the one the task was trained
  // with.
  auto wrong = test::run_cli(
      {"forward", base, "--ids", kIds, "--adapters", (tmp / "other").string() + "," + task});
  CHECK(wrong.exit_code == 2);
  CHECK_THAT(wrong.err, Contains("different or edited") && Contains(sha.substr(0, 16)));

  // The override: allowed, logged once (not once per module), recorded.
  auto forced = test::run_cli(
      {"forward", base, "--ids", kIds, "--adapters", task, "--override-inference-policy"});
  INFO(forced.err);
  CHECK(forced.exit_code == 0);
  CHECK(count(forced.err, "inference policy override") == 1);
  CHECK_THAT(forced.err, Contains("use without dependency 'safety'"));
}

TEST_CASE("adapter deps: generate, assess and recipes::Session refuse a task adapter alone",
          "[deps][reference]") {
  test::TempDir tmp;
  const fs::path tiny = test::safetune_home() / "models" / "tiny-llama";
  REQUIRE(fs::exists(tiny / "config.json"));
  std::string sha;
  {
    // Random non-zero adapters on the tiny model (the tokenizer and chat template come with it).
    auto m = model::load(tiny);
    lora::ModelAdapters ad(*m);
    lora::LoraConfig lc;
    lc.target_suffixes = {"q_proj", "v_proj"};
    torch::manual_seed(3);
    ad.add("safety", lc, lora::AdapterRole::safety, false);
    ad.add("task", lc, lora::AdapterRole::task, false);
    for (auto* st : ad.stacks())
      for (const char* n : {"safety", "task"}) st->get(n).B.normal_(0, 0.1);
    ad.set_required_at_inference("safety", true);
    sha = ad.weights_sha256("safety");
    ad.set_dependencies("task", {{"safety", sha}});
    ad.save_peft("safety", tmp / "safety", tiny.string());
    ad.save_peft("task", tmp / "task", tiny.string());
  }
  const std::string task = (tmp / "task").string(), both = (tmp / "safety").string() + "," + task;
  const std::string suite = (test::source_dir() / "data" / "probes").string();
  auto gen = test::run_cli(
      {"generate", tiny.string(), "-p", "hi", "--max-new-tokens", "2", "--adapters", task});
  CHECK(gen.exit_code == 2);
  CHECK_THAT(gen.err, Contains("adapter 'safety'") && Contains(sha.substr(0, 16)));
  CHECK(test::run_cli(
            {"generate", tiny.string(), "-p", "hi", "--max-new-tokens", "2", "--adapters", both})
            .exit_code == 0);
  auto as =
      test::run_cli({"assess", tiny.string(), "--suite", suite, "--limit", "1", "--max-new-tokens",
                     "2", "--adapters", task, "--out", (tmp / "assess").string()});
  CHECK(as.exit_code == 2);
  CHECK_THAT(as.err, Contains("adapter 'safety'"));
  // Under the override the report records it, once.
  auto forced = test::run_cli({"assess", tiny.string(), "--suite", suite, "--limit", "1",
                               "--max-new-tokens", "2", "--adapters", task,
                               "--override-inference-policy", "--out", (tmp / "assess").string()});
  INFO(forced.err);
  CHECK((forced.exit_code == 0 ||
         forced.exit_code == 3));  // 3: the tiny model breaches gates, which is fine here
  auto report =
      nlohmann::json::parse(io::read_file(tmp / "assess" / "report" / "safety_report.json"));
  REQUIRE(report["policy_overrides"].size() == 1);
  CHECK_THAT(report["policy_overrides"][0].get<std::string>(),
             Contains("use without dependency 'safety'"));

  // The library: Session::load_adapters, chat and scoring refuse; the safety adapter satisfies it.
  {
    recipes::Session s(tiny);
    CHECK_THROWS_AS(s.load_adapters({tmp / "task"}), PolicyError);
    CHECK_THROWS_AS(s.chat({{{"user", "hi"}}}, model::GenerateOptions{}), PolicyError);
  }
  recipes::Session s(tiny);
  s.load_adapters({tmp / "safety", tmp / "task"});
  model::GenerateOptions g;
  g.max_new_tokens = 1;
  CHECK(s.chat({{{"user", "hi"}}}, g).size() == 1);
  s.adapters().remove("safety", "test: removing the safety adapter");
  CHECK_THROWS_AS(s.chat({{{"user", "hi"}}}, g), PolicyError);
  recipes::SessionScorer scorer(s);
  CHECK_THROWS_AS(scorer.choice_logprobs({{"user", "hi"}}, {"a", "b"}), PolicyError);
}

TEST_CASE(
    "adapter deps: role, required_at_inference, dependencies and scales are under the content hash",
    "[deps][reference]") {
  test::TempDir tmp;
  write_pair(fix() / "base", tmp.path());
  auto m = model::load(fix() / "base");
  lora::ModelAdapters ad(*m);
  const auto info = lora::ModelAdapters::read_info(tmp / "task");
  CHECK(info.metadata_version == 2);
  REQUIRE(info.dependencies.size() == 1);
  CHECK(info.dependencies[0].name == "safety");

  // The hashes as docs/adapters.md defines them, recomputed in Python from the files alone.
  CHECK(python(tmp, "hashes.py", R"(
import sys, json, math, hashlib, re
from safetensors import safe_open
from safetensors.numpy import load_file
ok = True
for d in sys.argv[1:]:
    t = load_file(d + "/adapter_model.safetensors")
    meta = safe_open(d + "/adapter_model.safetensors", "np").metadata()
    cfg = json.load(open(d + "/adapter_config.json"))
    def pattern(p, m, default):
        for k, v in p.items():
            if re.match(r"(.*\.)?(%s)$" % k, m): return v
        return default
    scales = {}
    for k in t:
        if ".lora_A." not in k: continue
        m = k[len("base_model.model."):].split(".lora_A.")[0]
        r = t[k].shape[0]
        alpha = pattern(cfg.get("alpha_pattern") or {}, m, cfg["lora_alpha"])
        scales[m] = alpha / math.sqrt(r) if cfg["use_rslora"] else alpha / r
    def digest(block):
        h = hashlib.sha256()
        for k in sorted(t):
            h.update(k.encode() + b"\0"); h.update(t[k].tobytes())
        h.update(b"safetune.metadata\0"); h.update(json.dumps(block, sort_keys=True, separators=(",", ":")).encode())
        return h.hexdigest()
    w = digest({"scales": scales})
    c = digest({"scales": scales, "version": "2", "role": meta["safetune.role"],
                "required_at_inference": meta["safetune.required_at_inference"] == "true",
                "dependencies": json.loads(meta["safetune.dependencies"])})
    print(d, w == meta["safetune.weights_sha256"], c == meta["safetune.content_sha256"])
    ok = ok and w == meta["safetune.weights_sha256"] and c == meta["safetune.content_sha256"]
sys.exit(0 if ok else 1)
)",
               {(tmp / "safety").string(), (tmp / "task").string()}) == 0);

  struct Edit {
    const char* dir;
    const char* key;
    const char* value;
  };
  for (auto e :
       {Edit{"safety", "safetune.required_at_inference", "false"},
        Edit{"safety", "safetune.role", "other"}, Edit{"task", "safetune.dependencies", "[]"},
        Edit{"task", "safetune.role", "safety"}}) {
    const fs::path d = tmp / (std::string("edit-") + e.dir + "-" + e.key);
    copy_dir(tmp / e.dir, d);
    edit_metadata(d, e.key, e.value);
    INFO(e.dir << " " << e.key << "=" << e.value);
    CHECK_THROWS_WITH(ad.load_peft(d, "x"),
                      Contains("does not match its recorded SHA-256") && Contains(d.string()));
  }
  // The scale lives in adapter_config.json: doubling lora_alpha doubles the adapter's effect.
  const fs::path alpha = tmp / "edit-alpha";
  copy_dir(tmp / "safety", alpha);
  auto cfg = nlohmann::json::parse(io::read_file(alpha / "adapter_config.json"));
  cfg["lora_alpha"] = cfg["lora_alpha"].get<double>() * 2;
  io::atomic_write(alpha / "adapter_config.json", cfg.dump());
  CHECK_THROWS_WITH(ad.load_peft(alpha, "x"), Contains("does not match its recorded SHA-256"));
  CHECK(ad.names().empty());

  // The issue's reproduction: with the flag flipped the safety adapter could be switched off
  // without the override. Now the edited file does not load at all.
  const fs::path flipped = tmp / "flipped";
  copy_dir(tmp / "safety", flipped);
  edit_metadata(flipped, "safetune.required_at_inference", "false");
  auto r = test::run_cli({"forward", (fix() / "base").string(), "--ids", kIds, "--adapters",
                          flipped.string(), "--disable-adapter", "safety"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("recorded SHA-256"));

  // Older adapters (no metadata version) still load, with one warning each.
  auto legacy = test::run_cli({"forward", (fix() / "base").string(), "--ids", kIds, "--adapters",
                               (fix() / "adapters" / "a").string()});
  CHECK(legacy.exit_code == 0);
  CHECK(count(legacy.err, "carries no dependency metadata") == 1);
}

TEST_CASE("adapter deps: the inference-policy override is logged once per adapter and action",
          "[deps][reference]") {
  test::TempDir tmp;
  write_pair(fix() / "base", tmp.path());
  // Adapter a sits on 8 Linears; before, each printed its own warning.
  auto r = test::run_cli({"forward", (fix() / "base").string(), "--ids", kIds, "--adapters",
                          (tmp / "safety").string(), "--disable-adapter", "safety",
                          "--override-inference-policy"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(count(r.err, "inference policy override") == 1);
  auto m = model::load(fix() / "base");
  lora::ModelAdapters ad(*m);
  ad.load_peft(tmp / "safety");
  ad.set_enabled("safety", false, "ablation");
  auto log = ad.policy_log().entries();
  REQUIRE(log.size() == 1);
  CHECK(log[0].modules == 8);
  CHECK(lora::describe(log[0]) == "disable of adapter 'safety' on 8 modules (ablation)");
}

TEST_CASE("adapter deps: adapter_config.json that PEFT refuses is refused, naming the file and key",
          "[deps][reference]") {
  test::TempDir tmp;
  auto m = model::load(fix() / "base");
  lora::ModelAdapters ad(*m);
  const fs::path a = fix() / "adapters" / "a";
  auto with_config = [&](const std::string& name,
                         const std::function<void(nlohmann::json&)>& edit) {
    const fs::path d = tmp / name;
    copy_dir(a, d);
    auto cfg = nlohmann::json::parse(io::read_file(d / "adapter_config.json"));
    edit(cfg);
    io::atomic_write(d / "adapter_config.json", cfg.dump());
    return d;
  };
  // nlohmann's type errors (type_error.306 / .302) used to surface with no file or key.
  test::write_text(tmp / "array.json", "[1, 2]");
  const fs::path arr = tmp / "arr";
  copy_dir(a, arr);
  fs::copy_file(tmp / "array.json", arr / "adapter_config.json",
                fs::copy_options::overwrite_existing);
  CHECK_THROWS_WITH(ad.load_peft(arr), Contains("adapter_config.json") && Contains("JSON object"));
  auto dora = with_config("dora", [](auto& c) { c["use_dora"] = "no"; });
  CHECK_THROWS_WITH(ad.load_peft(dora), Contains("adapter_config.json") &&
                                            Contains("'use_dora' must be true or false"));
  auto pt = with_config("pt", [](auto& c) { c["peft_type"] = 7; });
  CHECK_THROWS_WITH(ad.load_peft(pt),
                    Contains("adapter_config.json") && Contains("'peft_type' must be a string"));
  auto rp = with_config("rp", [](auto& c) {
    c["rank_pattern"] = nlohmann::json::object({{"down_proj", "2"}});
  });
  CHECK_THROWS_WITH(ad.load_peft(rp),
                    Contains("adapter_config.json") && Contains("'rank_pattern.down_proj'"));

  // r disagreeing with the tensors, and target_modules matching nothing: PEFT refuses both (checked
  // below with PEFT itself), so must we.
  auto rank = with_config("rank", [](auto& c) { c["r"] = 6; });
  CHECK_THROWS_WITH(ad.load_peft(rank),
                    Contains("gives rank 6") && Contains("tensors have rank 4"));
  auto none = with_config(
      "none", [](auto& c) { c["target_modules"] = nlohmann::json::array({"nothing_proj"}); });
  CHECK_THROWS_WITH(ad.load_peft(none), Contains("target_modules matches no Linear"));
  auto partial = with_config(
      "partial", [](auto& c) { c["target_modules"] = nlohmann::json::array({"q_proj"}); });
  CHECK_THROWS_WITH(ad.load_peft(partial), Contains("which target_modules does not select"));
  CHECK(ad.names().empty());
  CHECK(python(tmp, "peft_refuses.py", R"(
import sys
from peft import PeftModel
from transformers import LlamaForCausalLM
fix, tmp = sys.argv[1], sys.argv[2]
ok = True
for name in ["rank", "none"]:
    base = LlamaForCausalLM.from_pretrained(fix + "/base")
    try:
        PeftModel.from_pretrained(base, tmp + "/" + name)
        print(name, "loaded by PEFT"); ok = False
    except Exception as e:
        print(name, "refused by PEFT:", type(e).__name__, str(e)[:120])
sys.exit(0 if ok else 1)
)",
               {fix().string(), tmp.path().string()}) == 0);
}

TEST_CASE("adapter deps: a model with an adapter merged in records it; applying it again warns",
          "[deps][reference]") {
  test::TempDir tmp;
  const std::string sha = write_pair(fix() / "base", tmp.path());
  const std::string base = (fix() / "base").string();
  auto r = test::run_cli(
      {"merge", base, "--adapters", (tmp / "safety").string(), "--out", (tmp / "merged").string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto cfg = nlohmann::json::parse(io::read_file(tmp / "merged" / "config.json"));
  REQUIRE(cfg["safetune_merged_adapters"].size() == 1);
  CHECK(cfg["safetune_merged_adapters"][0]["weights_sha256"] == sha);
  auto again = test::run_cli({"forward", (tmp / "merged").string(), "--ids", kIds, "--adapters",
                              (tmp / "safety").string()});
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.err, Contains("already merged into this model's weights"));
  // The task adapter on the model its safety adapter was merged into: satisfied, and PEFT's a + b.
  auto task = test::run_cli({"forward", (tmp / "merged").string(), "--ids", kIds, "--adapters",
                             (tmp / "task").string(), "--out", (tmp / "t.safetensors").string()});
  INFO(task.err);
  REQUIRE(task.exit_code == 0);
  CHECK(max_diff(test::tensor_in(tmp / "t.safetensors", "logits"),
                 test::tensor_in(fix() / "logits.safetensors", "unmerged")) < 1e-4);
}

TEST_CASE("adapter deps: safety + task packed into one PEFT adapter and one GGUF LoRA",
          "[deps][reference]") {
  test::TempDir tmp;
  write_pair(fix() / "base", tmp.path());
  const std::string base = (fix() / "base").string();
  const std::string both = (tmp / "safety").string() + "," + (tmp / "task").string();
  auto p = test::run_cli({"export", "--adapters", both, "--format", "peft", "--model", base,
                          "--out", (tmp / "packed").string()});
  INFO(p.err);
  REQUIRE(p.exit_code == 0);
  CHECK_THAT(p.out, Contains("safety+task packed as one PEFT adapter"));
  auto g = test::run_cli({"export", "--adapters", both, "--format", "gguf-lora", "--model", base,
                          "--out", (tmp / "packed.gguf").string()});
  INFO(g.err);
  REQUIRE(g.exit_code == 0);
  auto ours = test::run_cli({"forward", base, "--ids", kIds, "--adapters", both, "--out",
                             (tmp / "ours.safetensors").string()});
  REQUIRE(ours.exit_code == 0);
  // safetune itself loads the packed adapter as one, required at inference (it holds the safety
  // adapter).
  auto back =
      test::run_cli({"forward", base, "--ids", kIds, "--adapters", (tmp / "packed").string(),
                     "--out", (tmp / "back.safetensors").string()});
  REQUIRE(back.exit_code == 0);
  CHECK(max_diff(test::tensor_in(tmp / "back.safetensors", "logits"),
                 test::tensor_in(tmp / "ours.safetensors", "logits")) < 1e-5);
  CHECK(lora::ModelAdapters::read_info(tmp / "packed").required_at_inference);

  // PEFT loads the packed directory on the same base: its logits equal safetune's with both
  // adapters active and PEFT's own with a + b active. gguf's reader: llama.cpp's delta
  // (alpha / r) B A per module equals the sum of PEFT's s B A of the two source adapters.
  CHECK(python(tmp, "check_packed.py", R"(
import sys, json, math
import numpy as np, torch
from peft import PeftModel
from safetensors.torch import load_file
from safetensors.numpy import load_file as load_np
from transformers import LlamaForCausalLM
from gguf import GGUFReader
fix, tmp = sys.argv[1], sys.argv[2]
ref = load_file(fix + "/logits.safetensors")
base = LlamaForCausalLM.from_pretrained(fix + "/base").eval()
m = PeftModel.from_pretrained(base, tmp + "/packed").eval()
with torch.no_grad():
    theirs = m(ref["ids"]).logits
ours = load_file(tmp + "/ours.safetensors")["logits"]
d1 = (theirs - ours).abs().max().item()
d2 = (theirs - ref["unmerged"]).abs().max().item()
print("max |PEFT(packed) - safetune(safety+task)|", d1, " max |PEFT(packed) - PEFT(a+b)|", d2)
ok = d1 < 1e-4 and d2 < 1e-4
cfg = json.load(open(fix + "/base/config.json"))
n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}
def permute(w, h):
    return w.reshape(h, 2, w.shape[0] // h // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
def scale(acfg, module, rank):
    alpha = acfg["lora_alpha"]
    for k, v in acfg.get("alpha_pattern", {}).items():
        if module.endswith(k): alpha = v
    return alpha / math.sqrt(rank) if acfg["use_rslora"] else alpha / rank
want = {}
for name in ["a", "b"]:
    acfg = json.load(open(f"{fix}/adapters/{name}/adapter_config.json"))
    t = load_np(f"{fix}/adapters/{name}/adapter_model.safetensors")
    for key in [k for k in t if ".lora_A." in k]:
        module = key.split(".lora_A.")[0][len("base_model.model."):]
        A, B = t[key].astype(np.float64), t[key.replace("lora_A", "lora_B")].astype(np.float64)
        want[module] = want.get(module, 0) + scale(acfg, module, A.shape[0]) * B @ A
r = GGUFReader(tmp + "/packed.gguf")
f = r.fields["adapter.lora.alpha"]
alpha = float(f.parts[f.data[0]][0])
tensors = {t.name: np.asarray(t.data).astype(np.float64) for t in r.tensors}
assert len(tensors) == 2 * len(want), (len(tensors), len(want))
for module, delta in want.items():
    layer, part = module[len("model.layers."):].split(".", 1)
    g = f"blk.{layer}.{parts[part]}.weight"
    a, b = tensors[g + ".lora_a"], tensors[g + ".lora_b"]
    got = (alpha / a.shape[0]) * b @ a
    if part in ("self_attn.q_proj", "self_attn.k_proj"):
        delta = permute(delta, n_head if part == "self_attn.q_proj" else n_kv)
    err = np.abs(got - delta).max() / np.abs(delta).max()
    if err > 1e-6:
        print("gguf mismatch", g, err); ok = False
print("gguf modules", len(want))
sys.exit(0 if ok else 1)
)",
               {fix().string(), tmp.path().string()}) == 0);
}
