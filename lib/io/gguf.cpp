// GgufFile: mmap, validated header and typed metadata access.
#include "safetune/io/gguf.hpp"

#include <ATen/ATen.h>

#include "io/gguf_format.hpp"
#include "io/gguf_quants.hpp"
#include "io/mapped_file.hpp"
#include "safetune/error.hpp"

namespace safetune::io {
namespace fs = std::filesystem;
using gguf::Value;
using gguf::ValueType;

namespace {
bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
         t == ValueType::UINT64;
}
bool is_signed(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 ||
         t == ValueType::INT64 || t == ValueType::BOOL;
}
bool is_float(ValueType t) { return t == ValueType::FLOAT32 || t == ValueType::FLOAT64; }

std::int64_t as_int(const Value& v, const std::string& where) {
  if (is_signed(v.type)) return v.i;
  if (is_unsigned(v.type)) {
    if (v.u > static_cast<std::uint64_t>(INT64_MAX))
      throw FormatError("integer value too large", where);
    return static_cast<std::int64_t>(v.u);
  }
  throw FormatError(std::string("expected an integer, found ") + gguf::value_type_name(v.type),
                    where);
}
double as_float(const Value& v, const std::string& where) {
  if (is_float(v.type)) return v.f;
  if (is_signed(v.type)) return static_cast<double>(v.i);
  if (is_unsigned(v.type)) return static_cast<double>(v.u);
  throw FormatError(std::string("expected a number, found ") + gguf::value_type_name(v.type),
                    where);
}
const Value& as_array(const Value& v, const std::string& where) {
  if (v.type != ValueType::ARRAY)
    throw FormatError(std::string("expected an array, found ") + gguf::value_type_name(v.type),
                      where);
  return v;
}
}  // namespace

GgufFile::GgufFile(const fs::path& path) : path_(path) {
  auto map = MappedFile::open(path);
  header_ = gguf::parse_header(map->bytes(), path.string());
  data_ = map->data();
  mapping_ = std::move(map);
}

bool GgufFile::has(const std::string& key) const { return header_.metadata_index.count(key) > 0; }

const Value& GgufFile::get(const std::string& key) const {
  auto it = header_.metadata_index.find(key);
  if (it == header_.metadata_index.end())
    throw FormatError("metadata key is missing", path_.string() + ": key '" + key + "'");
  return header_.metadata[it->second].second;
}

#define SAFETUNE_WHERE (path_.string() + ": key '" + key + "'")

std::string GgufFile::get_string(const std::string& key) const {
  const Value& v = get(key);
  if (v.type != ValueType::STRING)
    throw FormatError(std::string("expected a string, found ") + gguf::value_type_name(v.type),
                      SAFETUNE_WHERE);
  return v.s;
}
std::int64_t GgufFile::get_int(const std::string& key) const {
  return as_int(get(key), SAFETUNE_WHERE);
}
double GgufFile::get_float(const std::string& key) const {
  return as_float(get(key), SAFETUNE_WHERE);
}
bool GgufFile::get_bool(const std::string& key) const {
  const Value& v = get(key);
  if (v.type != ValueType::BOOL)
    throw FormatError(std::string("expected a bool, found ") + gguf::value_type_name(v.type),
                      SAFETUNE_WHERE);
  return v.i != 0;
}
std::vector<std::string> GgufFile::get_strings(const std::string& key) const {
  const Value& a = as_array(get(key), SAFETUNE_WHERE);
  if (a.elem_type != ValueType::STRING)
    throw FormatError(std::string("expected an array of strings, found an array of ") +
                          gguf::value_type_name(a.elem_type),
                      SAFETUNE_WHERE);
  std::vector<std::string> out;
  out.reserve(a.array.size());
  for (const Value& e : a.array) out.push_back(e.s);
  return out;
}
std::vector<std::int64_t> GgufFile::get_ints(const std::string& key) const {
  const Value& a = as_array(get(key), SAFETUNE_WHERE);
  std::vector<std::int64_t> out;
  out.reserve(a.array.size());
  for (const Value& e : a.array) out.push_back(as_int(e, SAFETUNE_WHERE));
  return out;
}
std::vector<double> GgufFile::get_floats(const std::string& key) const {
  const Value& a = as_array(get(key), SAFETUNE_WHERE);
  std::vector<double> out;
  out.reserve(a.array.size());
  for (const Value& e : a.array) out.push_back(as_float(e, SAFETUNE_WHERE));
  return out;
}
std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}
std::int64_t GgufFile::get_int(const std::string& key, std::int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}
double GgufFile::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}
#undef SAFETUNE_WHERE

const gguf::TensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = header_.tensor_index.find(name);
  return it == header_.tensor_index.end() ? nullptr : &header_.tensors[it->second];
}

const std::uint8_t* GgufFile::tensor_data(const gguf::TensorInfo& info) const {
  return data_ + header_.data_offset + info.offset;
}

at::Tensor GgufFile::tensor(const std::string& name, at::ScalarType dtype) const {
  const std::string where = path_.string() + ": tensor '" + name + "'";
  const gguf::TensorInfo* info = find_tensor(name);
  if (!info) throw FormatError("no such tensor", where);
  // A plain float tensor already in the target dtype is a view of the mapping (no copy).
  const auto type = static_cast<gguf::GgmlType>(info->type);
  const bool same = (type == gguf::GgmlType::F32 && dtype == at::kFloat) ||
                    (type == gguf::GgmlType::F16 && dtype == at::kHalf) ||
                    (type == gguf::GgmlType::BF16 && dtype == at::kBFloat16);
  const std::uint8_t* ptr = tensor_data(*info);
  if (same && reinterpret_cast<std::uintptr_t>(ptr) % at::elementSize(dtype) == 0 &&
      info->n_elements > 0) {
    auto keep = mapping_;
    return at::from_blob(
        const_cast<std::uint8_t*>(ptr), info->torch_shape(), [keep](void*) {},
        at::TensorOptions().dtype(dtype).device(at::kCPU));
  }
  return gguf_dequantize(*info, ptr, dtype, where);
}

}  // namespace safetune::io
