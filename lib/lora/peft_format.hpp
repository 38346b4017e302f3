// The PEFT adapter format's shared pieces: tensor keys, the metadata block the adapter hashes
// cover, the hashes themselves. Internal to lora/ (model_adapters.cpp and peft_files.cpp).
#pragma once
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "safetune/lora/model_adapters.hpp"

namespace safetune::lora::peft_format {

inline constexpr const char* kPrefix = "base_model.model.";
inline constexpr const char* kMetadataVersion = "2";

inline std::string short_sha(const std::string& sha) { return sha.substr(0, 16); }

nlohmann::json dependencies_json(const std::vector<AdapterDependency>& deps);

// The tensors under their PEFT keys (what the file holds) and the block of metadata the hash
// covers. Weights block: each module's scale (alpha and rsLoRA decide it; the ranks are in the
// tensors). Content block: that plus role, required_at_inference and the dependencies.
// nlohmann::json sorts object keys and prints doubles round-trip, so the text is canonical.
std::vector<std::pair<std::string, at::Tensor>> peft_tensors(const AdapterFactors& a);
std::string metadata_block(const AdapterFactors& a, bool with_flags);

// tensors_sha256 of the adapter's tensors (or `tensors`, when already built) and its block.
std::string adapter_sha256(
    const AdapterFactors& a, bool with_flags,
    const std::vector<std::pair<std::string, at::Tensor>>* tensors = nullptr);

}  // namespace safetune::lora::peft_format
