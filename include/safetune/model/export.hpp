// Writing a model as a Hugging Face directory (config.json + sharded safetensors) that transformers
// loads.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>

#include <c10/core/ScalarType.h>

#include "safetune/model/causal_lm.hpp"

namespace safetune::model {

struct ExportOptions {
  // Tensors are packed into shards of at most this many bytes (a larger tensor gets its own
  // shard). One shard is written as model.safetensors; more as model-0000i-of-0000N.safetensors
  // plus model.safetensors.index.json, as save_pretrained does.
  std::uint64_t max_shard_bytes = 2ull << 30;
  std::optional<c10::ScalarType> dtype;  // default: the model's dtype
};

// Every file goes through io::AtomicFile; config.json is written last, so a directory with a
// config.json is complete. Stale model*.safetensors / index files from an earlier export are
// removed.
void export_hf(const CausalLM& model, const std::filesystem::path& dir,
               const ExportOptions& options = {});

}  // namespace safetune::model
