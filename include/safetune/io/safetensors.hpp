// safetensors checkpoints: zero-copy mmap loading (single file or sharded) and atomic saving.
#pragma once
#include <ATen/Tensor.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <string_view>

namespace safetune::io {

// Every tensor of: a .safetensors file; a directory holding model.safetensors or a sharded
// model.safetensors.index.json; or an index file. Tensors keep the file's dtype; they are views of
// a private (copy-on-write) mmap of the file, so nothing is copied unless a tensor's bytes are
// misaligned for its dtype; the mapping lives as long as any tensor does. Names as stored, in file
// order (shards in index order).
std::vector<std::pair<std::string, at::Tensor>> safetensors_load(const std::filesystem::path& path);

// Writes one file atomically (io::AtomicFile); tensors are made contiguous CPU; dtype kept (F32,
// F16, BF16, F64, I64, I32, I16, I8, U8, BOOL, ...). metadata -> "__metadata__".
void safetensors_save(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A Hugging Face model directory's weights: `dir`/model.safetensors when everything fits in one
// shard of `max_shard_bytes`, else model-0000i-of-0000N.safetensors plus
// model.safetensors.index.json (weight_map, metadata.total_size), as transformers writes them.
// Tensors keep their order; a stale single file or index of the other layout is removed so that
// loaders see only the new weights. Returns the files written.
std::vector<std::filesystem::path> safetensors_save_sharded(
    const std::filesystem::path& dir,
    const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    std::uint64_t max_shard_bytes = 5'000'000'000ULL,
    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// What a file's header lists: tensor names in file order and its "__metadata__" (string to
// string), reading only the header.
struct SafetensorsListing {
  std::vector<std::string> names;
  std::map<std::string, std::string> metadata;
};
SafetensorsListing safetensors_list(const std::filesystem::path& file);

// torch dtype <-> safetensors dtype name; FormatError (where = `where`) for dtypes without a match.
at::ScalarType safetensors_scalar_type(std::string_view dtype, const std::string& where = {});
std::string safetensors_dtype_name(at::ScalarType type, const std::string& where = {});

}  // namespace safetune::io
