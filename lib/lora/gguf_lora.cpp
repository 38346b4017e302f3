// GGUF LoRA export: adapter factors under llama.cpp tensor names with one global alpha.
#include "safetune/lora/gguf_lora.hpp"

#include <ATen/ATen.h>

#include <cmath>

#include "safetune/error.hpp"
#include "safetune/io/gguf.hpp"
#include "safetune/io/gguf_writer.hpp"
#include "safetune/log.hpp"
#include "safetune/model/gguf.hpp"

namespace safetune::lora {

GgufLoraSummary export_gguf_lora(ModelAdapters& adapters, const std::string& name,
                                 const std::string& architecture, std::int64_t n_head,
                                 std::int64_t n_head_kv, const std::filesystem::path& out,
                                 c10::ScalarType dtype) {
  if (!adapters.has(name)) throw AdapterError("no adapter named '" + name + "'", out.string());
  const std::vector<std::string> alone{name};
  adapters.enforce_dependencies(&alone);
  return export_gguf_lora(adapters.factors(name), architecture, n_head, n_head_kv, out, dtype);
}

GgufLoraSummary export_gguf_lora(const AdapterFactors& adapter, const std::string& architecture,
                                 std::int64_t n_head, std::int64_t n_head_kv,
                                 const std::filesystem::path& out, c10::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16)
    throw UsageError(std::string("GGUF LoRA tensors are float32, float16 or bfloat16, not ") +
                         c10::toString(dtype),
                     "dtype");
  const std::string& name = adapter.name;
  if (adapter.modules.empty())
    throw AdapterError("adapter '" + name + "' targets no Linear", out.string());
  GgufLoraSummary summary;
  // llama.cpp computes scale = alpha / rank per tensor; take alpha from the first module.
  const ModuleFactors& first = adapter.modules.front();
  summary.alpha = first.spec.scale() * static_cast<double>(first.spec.rank);
  const float alpha32 = static_cast<float>(summary.alpha);

  io::GgufWriter w;
  w.add_string("general.architecture", architecture);
  w.add_string("general.type", "adapter");
  w.add_string("general.name", name);
  w.add_string("adapter.type", "lora");
  w.add_float32("adapter.lora.alpha", alpha32);
  w.add_uint32("general.quantization_version", 2);
  for (const ModuleFactors& a : adapter.modules) {
    const std::string& module = a.module;
    auto gguf_name = model::hf_to_gguf_name(module + ".weight");
    if (!gguf_name) throw AdapterError("this Linear has no llama.cpp tensor name", module);
    at::Tensor A = a.A.detach().to(at::kCPU, at::kFloat);
    at::Tensor B = a.B.detach().to(at::kCPU, at::kFloat);
    // What llama.cpp will apply, alpha32 / r, against what PEFT applies, scale().
    const double factor =
        a.spec.scale() * static_cast<double>(a.spec.rank) / static_cast<double>(alpha32);
    if (std::abs(factor - 1.0) > 1e-6) {
      B = (B.to(at::kDouble) * factor).to(at::kFloat);
      summary.rescaled.push_back(module);
    }
    if (architecture == "llama") {
      const bool q = gguf_name->find(".attn_q.") != std::string::npos;
      const bool k = gguf_name->find(".attn_k.") != std::string::npos;
      if (q || k)
        B = model::gguf_permute_qk_rows(B, q ? n_head : n_head_kv, /*inverse=*/false, module);
    }
    w.add_tensor(*gguf_name + ".lora_a", A.to(dtype));
    w.add_tensor(*gguf_name + ".lora_b", B.to(dtype));
    ++summary.modules;
  }
  if (!summary.rescaled.empty())
    log_warn("gguf-lora: " + std::to_string(summary.rescaled.size()) +
             " module(s) have a scale that one alpha / rank cannot express (rsLoRA or per-module "
             "alphas with "
             "mixed ranks, or a packed adapter); the difference is folded into their lora_b");
  w.write(out);
  return summary;
}

}  // namespace safetune::lora
