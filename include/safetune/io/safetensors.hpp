// safetensors checkpoints: zero-copy mmap loading (single file or sharded) and atomic saving.
#pragma once
#include <ATen/Tensor.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "safetune/io/safetensors_header.hpp"

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

// torch dtype <-> safetensors dtype name; FormatError (where = `where`) for dtypes without a match.
at::ScalarType safetensors_scalar_type(std::string_view dtype, const std::string& where = {});
std::string safetensors_dtype_name(at::ScalarType type, const std::string& where = {});

}  // namespace safetune::io
