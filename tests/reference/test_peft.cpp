// PEFT adapter files: load PEFT-made adapters (one and two active), save ours and let PEFT load
// them.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>

#include "safetune/error.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;

namespace {
std::map<std::string, at::Tensor> ref_logits() {
  auto v = io::safetensors_load(test::fixture_dir() / "peft" / "logits.safetensors");
  return {v.begin(), v.end()};
}
double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}
}  // namespace

TEST_CASE("peft: adapters made by PEFT give PEFT's logits", "[peft][reference]") {
  const fs::path dir = test::fixture_dir() / "peft";
  auto model = model::load(dir / "base");
  auto ref = ref_logits();
  auto ids = ref.at("ids");
  torch::NoGradGuard ng;
  lora::ModelAdapters adapters(*model);
  CHECK(max_diff(model->forward(ids), ref.at("base")) < 1e-4);
  auto info = adapters.load_peft(dir / "adapters" /
                                 "a");  // PEFT puts non-default adapters in subdirectories
  CHECK(info.modules.size() == 6);      // q, v, down in 2 layers
  CHECK(info.name == "a");
  auto la = model->forward(ids);
  double da = max_diff(la, ref.at("a"));
  INFO("max |safetune - PEFT| with adapter a: " << da);
  CHECK(da < 1e-4);
  CHECK(max_diff(la, ref.at("base")) > 1e-2);  // the adapter really changes the output
  adapters.load_peft(dir / "adapters" / "b", "b");
  double dab = max_diff(model->forward(ids), ref.at("ab"));
  INFO("max |safetune - PEFT| with adapters a+b: " << dab);
  CHECK(dab < 1e-4);
  // Merged equals unmerged.
  adapters.merge({"a", "b"}, lora::MergeCopy::keep);
  CHECK(max_diff(model->forward(ids), ref.at("ab")) < 1e-4);
  adapters.unmerge({"a", "b"});
  adapters.set_enabled("b", false);
  adapters.set_enabled("a", false);
  CHECK(max_diff(model->forward(ids), ref.at("base")) < 1e-5);
}

TEST_CASE("peft: adapters saved by safetune load in PEFT with equal logits", "[peft][reference]") {
  const fs::path fix = test::fixture_dir() / "peft";
  auto model = model::load(fix / "base");
  lora::ModelAdapters adapters(*model);
  lora::LoraConfig cfg;
  cfg.all_linear = true;
  cfg.rank = 4;
  cfg.alpha = 8;
  cfg.use_rslora = true;
  adapters.add("safety", cfg, lora::AdapterRole::safety, /*trainable=*/true);
  {
    torch::NoGradGuard ng;
    torch::manual_seed(5);
    for (auto* st : adapters.stacks("safety")) st->get("safety").B.normal_(0, 0.2);
  }
  adapters.set_required_at_inference("safety", true);
  test::TempDir tmp;
  adapters.save_peft("safety", tmp / "safety", "tiny-llama");
  auto info = lora::ModelAdapters::read_info(tmp / "safety");
  CHECK(info.role == lora::AdapterRole::safety);
  CHECK(info.required_at_inference);
  CHECK(info.content_sha256.size() == 64);

  torch::NoGradGuard ng;
  auto ids = ref_logits().at("ids");
  io::safetensors_save(tmp / "ours.safetensors", {{"logits", model->forward(ids).contiguous()}});
  std::ofstream(tmp / "check.py") << R"(
import sys, torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaForCausalLM
fix, tmp = sys.argv[1], sys.argv[2]
base = LlamaForCausalLM.from_pretrained(fix + "/base").eval()
m = PeftModel.from_pretrained(base, tmp + "/safety").eval()
ids = load_file(fix + "/logits.safetensors")["ids"]
with torch.no_grad():
    theirs = m(ids).logits
ours = load_file(tmp + "/ours.safetensors")["logits"]
d = (theirs - ours).abs().max().item()
print("max diff", d)
sys.exit(0 if d < 1e-4 else 1)
)";
  std::string cmd = test::python().string() + " " + (tmp / "check.py").string() + " " +
                    fix.string() + " " + tmp.path().string();
  CHECK(std::system(cmd.c_str()) == 0);

  // Loading our own file back restores role and policy, and a damaged file is refused.
  auto model2 = model::load(fix / "base");
  lora::ModelAdapters again(*model2);
  auto back = again.load_peft(tmp / "safety");
  CHECK(back.name == "safety");
  CHECK_THROWS_AS(again.set_enabled("safety", false), AdapterError);  // required at inference
  CHECK(max_diff(model2->forward(ids), model->forward(ids)) < 1e-6);
}

TEST_CASE("peft: bad adapter directories are refused with the file named", "[peft][reference]") {
  const fs::path fix = test::fixture_dir() / "peft";
  auto model = model::load(fix / "base");
  lora::ModelAdapters adapters(*model);
  test::TempDir tmp;
  CHECK_THROWS_WITH(adapters.load_peft(tmp / "nothing"),
                    Catch::Matchers::Contains("adapter_config.json"));
  fs::create_directories(tmp / "bad");
  fs::copy_file(fix / "adapters" / "a" / "adapter_model.safetensors",
                tmp / "bad" / "adapter_model.safetensors");
  test::write_text(tmp / "bad" / "adapter_config.json",
                   "{\"peft_type\": \"LORA\", \"r\": 4, \"use_dora\": true}");
  CHECK_THROWS_WITH(adapters.load_peft(tmp / "bad"),
                    Catch::Matchers::Contains("DoRA adapters are not supported"));
  test::write_text(tmp / "bad" / "adapter_config.json", "{not json");
  CHECK_THROWS_WITH(adapters.load_peft(tmp / "bad"), Catch::Matchers::Contains("malformed JSON"));
  // A model of another shape: the adapter's tensors do not fit.
  auto bigger = io::safetensors_load(fix / "adapters" / "a" / "adapter_model.safetensors");
  for (auto& [k, t] : bigger) t = torch::cat({t, t}, t.dim() - 1).contiguous();
  fs::create_directories(tmp / "shape");
  io::safetensors_save(tmp / "shape" / "adapter_model.safetensors", bigger);
  fs::copy_file(fix / "adapters" / "a" / "adapter_config.json",
                tmp / "shape" / "adapter_config.json");
  CHECK_THROWS_WITH(adapters.load_peft(tmp / "shape"),
                    Catch::Matchers::Contains("do not fit the Linear"));
  CHECK(adapters.names().empty());  // nothing attached by the failed loads
}
