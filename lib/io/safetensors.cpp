// safetensors load (mmap, zero copy, sharded indexes) and atomic save.
#include "safetune/io/safetensors.hpp"

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <set>

#include "io/mapped_file.hpp"
#include "io/safetensors_header.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::io {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"BOOL", at::kBool},
    {"U8", at::kByte},
    {"I8", at::kChar},
    {"I16", at::kShort},
    {"U16", at::kUInt16},
    {"I32", at::kInt},
    {"U32", at::kUInt32},
    {"I64", at::kLong},
    {"U64", at::kUInt64},
    {"F16", at::kHalf},
    {"BF16", at::kBFloat16},
    {"F32", at::kFloat},
    {"F64", at::kDouble},
    {"F8_E4M3", at::kFloat8_e4m3fn},
    {"F8_E5M2", at::kFloat8_e5m2},
};

std::string tensor_where(const fs::path& file, const std::string& name) {
  return file.string() + ": tensor '" + name + "'";
}

std::vector<std::pair<std::string, at::Tensor>> load_file(const fs::path& file) {
  auto map = MappedFile::open(file);
  SafetensorsHeader header = safetensors_parse_header(map->bytes(), map->size(), file.string());
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(header.tensors.size());
  for (const TensorInfo& t : header.tensors) {
    const at::ScalarType type = safetensors_scalar_type(t.dtype, tensor_where(file, t.name));
    const std::size_t elem = safetensors_dtype_size(t.dtype);
    std::uint8_t* ptr = map->data() + header.data_offset + t.begin;
    auto options = at::TensorOptions().dtype(type).device(at::kCPU);
    at::Tensor tensor;
    if (reinterpret_cast<std::uintptr_t>(ptr) % elem == 0) {
      tensor = at::from_blob(
          ptr, t.shape, [map](void*) {}, options);
    } else {
      // Misaligned for its dtype (odd header padding): the kernels expect aligned data, so copy.
      tensor = at::empty(t.shape, options);
      if (t.end > t.begin) std::memcpy(tensor.data_ptr(), ptr, t.end - t.begin);
    }
    out.emplace_back(t.name, std::move(tensor));
  }
  return out;
}

// Shard names come from the index file; keep them inside its directory.
void check_shard_name(const std::string& shard, const fs::path& index, const std::string& tensor) {
  fs::path p(shard);
  bool bad = shard.empty() || p.is_absolute();
  for (const auto& part : p)
    if (part == "..") bad = true;
  if (bad)
    throw FormatError("weight_map names shard '" + shard + "' outside the index's directory",
                      index.string() + ": tensor '" + tensor + "'");
}

std::vector<std::pair<std::string, at::Tensor>> load_index(const fs::path& index) {
  std::string text = read_file(index);
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object())
    throw FormatError("malformed index JSON", index.string());
  auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object())
    throw FormatError("index has no weight_map object", index.string());
  // shards in order of first mention, so the output order is stable
  std::vector<std::string> shards;
  std::map<std::string, std::vector<std::string>> wanted;  // shard -> tensor names
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      throw FormatError("weight_map value is not a string",
                        index.string() + ": tensor '" + it.key() + "'");
    std::string shard = it.value().get<std::string>();
    check_shard_name(shard, index, it.key());
    if (!wanted.count(shard)) shards.push_back(shard);
    wanted[shard].push_back(it.key());
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<std::string> names;
  const fs::path dir = index.parent_path();
  for (const std::string& shard : shards) {
    fs::path file = dir / shard;
    if (!fs::is_regular_file(file))
      throw FormatError("weight_map points to missing shard '" + shard + "'",
                        index.string() + ": tensor '" + wanted[shard].front() + "'");
    auto tensors = load_file(file);
    std::set<std::string> present;
    for (auto& [name, t] : tensors) present.insert(name);
    for (const std::string& name : wanted[shard])
      if (!present.count(name))
        throw FormatError("tensor listed in weight_map is missing from shard '" + shard + "'",
                          index.string() + ": tensor '" + name + "'");
    for (auto& entry : tensors) {
      if (!names.insert(entry.first).second)
        throw FormatError("tensor appears in more than one shard", tensor_where(file, entry.first));
      out.push_back(std::move(entry));
    }
  }
  return out;
}
}  // namespace

at::ScalarType safetensors_scalar_type(std::string_view dtype, const std::string& where) {
  for (const auto& d : kDtypes)
    if (dtype == d.name) return d.type;
  throw FormatError("unknown dtype '" + std::string(dtype) + "'", where);
}

std::string safetensors_dtype_name(at::ScalarType type, const std::string& where) {
  for (const auto& d : kDtypes)
    if (type == d.type) return d.name;
  throw FormatError(std::string("dtype ") + c10::toString(type) + " has no safetensors equivalent",
                    where);
}

SafetensorsListing safetensors_list(const fs::path& file) {
  SafetensorsHeader header = safetensors_read_header(file);
  SafetensorsListing out;
  for (const TensorInfo& t : header.tensors) out.names.push_back(t.name);
  out.metadata = std::move(header.metadata);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> safetensors_load(const fs::path& path) {
  if (fs::is_directory(path)) {
    if (fs::is_regular_file(path / "model.safetensors"))
      return load_file(path / "model.safetensors");
    if (fs::is_regular_file(path / "model.safetensors.index.json"))
      return load_index(path / "model.safetensors.index.json");
    throw IoError("directory holds neither model.safetensors nor model.safetensors.index.json",
                  path.string());
  }
  if (!fs::exists(path)) throw IoError("no such file", path.string());
  const std::string name = path.filename().string();
  if (name.size() > 5 && name.substr(name.size() - 5) == ".json") return load_index(path);
  return load_file(path);
}

void safetensors_save(const fs::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Data goes in descending element size so that every tensor stays aligned to its dtype
  // (the header is padded to 8 bytes), as the reference writer does.
  struct Item {
    const std::string* name;
    at::Tensor data;
    std::size_t elem;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::set<std::string> names;
  json header = json::object();
  for (const auto& [name, tensor] : tensors) {
    const std::string where = tensor_where(path, name);
    if (name == "__metadata__") throw FormatError("tensor name is reserved", where);
    if (!names.insert(name).second) throw FormatError("duplicate tensor name", where);
    if (!tensor.defined()) throw FormatError("tensor is undefined", where);
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    safetensors_dtype_name(t.scalar_type(), where);  // validates the dtype
    items.push_back({&name, t, static_cast<std::size_t>(t.element_size())});
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.elem > b.elem; });
  std::uint64_t offset = 0;
  for (const Item& it : items) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(it.data.nbytes());
    json entry;
    entry["dtype"] = safetensors_dtype_name(it.data.scalar_type());
    entry["shape"] = json::array();
    for (int64_t d : it.data.sizes()) entry["shape"].push_back(d);
    entry["data_offsets"] = {offset, offset + bytes};
    header[*it.name] = std::move(entry);
    offset += bytes;
  }
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    throw FormatError(std::string("cannot encode header: ") + e.what(), path.string());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i)
    len[i] =
        static_cast<unsigned char>((static_cast<std::uint64_t>(text.size()) >> (8 * i)) & 0xff);
  AtomicFile out(path);
  out.write(len, 8);
  out.write(text);
  for (const Item& it : items)
    if (it.data.nbytes() > 0) out.write(it.data.data_ptr(), it.data.nbytes());
  out.commit();
}

std::vector<fs::path> safetensors_save_sharded(
    const fs::path& dir, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    std::uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  if (max_shard_bytes == 0) throw IoError("max_shard_bytes must be positive", dir.string());
  // Greedy fill in the given order; a tensor larger than the limit gets a shard of its own.
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  std::uint64_t in_shard = 0, total = 0;
  for (const auto& [name, t] : tensors) {
    const std::uint64_t bytes =
        t.defined() ? static_cast<std::uint64_t>(t.numel() * t.element_size()) : 0;
    if (!shards.back().empty() && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().emplace_back(name, t);
    in_shard += bytes;
    total += bytes;
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError("cannot create directory: " + ec.message(), dir.string());
  std::vector<fs::path> written;
  if (shards.size() == 1) {
    safetensors_save(dir / "model.safetensors", shards[0], metadata);
    fs::remove(dir / "model.safetensors.index.json", ec);
    return {dir / "model.safetensors"};
  }
  const std::size_t n = shards.size();
  auto shard_name = [n](std::size_t i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    return std::string(buf);
  };
  json weight_map = json::object();
  for (std::size_t i = 0; i < n; ++i) {
    const std::string file = shard_name(i);
    safetensors_save(dir / file, shards[i], metadata);
    written.push_back(dir / file);
    for (const auto& entry : shards[i]) weight_map[entry.first] = file;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  atomic_write(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  written.push_back(dir / "model.safetensors.index.json");
  fs::remove(dir / "model.safetensors", ec);
  return written;
}

}  // namespace safetune::io
