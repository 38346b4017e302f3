// Export of one adapter in llama.cpp's GGUF LoRA format (what its convert_lora_to_gguf.py writes).
#pragma once
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <string>
#include <vector>

#include "safetune/lora/model_adapters.hpp"

namespace safetune::lora {

struct GgufLoraSummary {
  double alpha = 0;         // adapter.lora.alpha as written
  std::size_t modules = 0;  // Linears exported (two tensors each)
  std::vector<std::string>
      rescaled;  // modules whose scale one alpha cannot express: folded into lora_b
};

// Writes adapter `name` of `adapters` to `out`: general.architecture (the model's), general.type
// "adapter", adapter.type "lora", adapter.lora.alpha, and per targeted Linear the tensors
// "<llama.cpp name>.lora_a" [r, in] and ".lora_b" [out, r] (torch order). llama.cpp scales by
// alpha / r, so rsLoRA's alpha / sqrt(r) is folded into alpha; when ranks or per-module alphas make
// one alpha impossible, the remaining factor goes into that module's lora_b. For arch llama,
// lora_b's rows of q/k get the converter's rotary row permutation. dtype: float32, float16 or
// bfloat16. AdapterError naming the module when a Linear has no llama.cpp name. First enforces the
// adapter's dependencies among itself alone (PolicyError: a task adapter is not exported without
// its safety adapter unless the policy override is set; export the two packed).
GgufLoraSummary export_gguf_lora(ModelAdapters& adapters, const std::string& name,
                                 const std::string& architecture, std::int64_t n_head,
                                 std::int64_t n_head_kv, const std::filesystem::path& out,
                                 c10::ScalarType dtype = c10::ScalarType::Float);
// The same for a detached adapter, such as pack_adapters' result (safety + task in one file).
GgufLoraSummary export_gguf_lora(const AdapterFactors& adapter, const std::string& architecture,
                                 std::int64_t n_head, std::int64_t n_head_kv,
                                 const std::filesystem::path& out,
                                 c10::ScalarType dtype = c10::ScalarType::Float);

}  // namespace safetune::lora
