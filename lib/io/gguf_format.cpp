// GGUF header parser: a bounds-checked cursor over the file image; torch-free so it can be fuzzed.
#include <algorithm>
#include <cstring>
#include <limits>

#include "io/gguf_format.hpp"
#include "safetune/error.hpp"

namespace safetune::io::gguf {
namespace {

constexpr int kMaxArrayDepth = 8;
constexpr std::uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

struct TypeEntry {
  std::uint32_t id;
  GgmlTypeTraits traits;
};
// Block sizes and bytes per block, from the GGUF/ggml specification.
constexpr TypeEntry kTypes[] = {
    {0, {"F32", 1, 4}},         {1, {"F16", 1, 2}},         {2, {"Q4_0", 32, 18}},
    {3, {"Q4_1", 32, 20}},      {6, {"Q5_0", 32, 22}},      {7, {"Q5_1", 32, 24}},
    {8, {"Q8_0", 32, 34}},      {9, {"Q8_1", 32, 40}},      {10, {"Q2_K", 256, 84}},
    {11, {"Q3_K", 256, 110}},   {12, {"Q4_K", 256, 144}},   {13, {"Q5_K", 256, 176}},
    {14, {"Q6_K", 256, 210}},   {15, {"Q8_K", 256, 292}},   {16, {"IQ2_XXS", 256, 66}},
    {17, {"IQ2_XS", 256, 74}},  {18, {"IQ3_XXS", 256, 98}}, {19, {"IQ1_S", 256, 50}},
    {20, {"IQ4_NL", 32, 18}},   {21, {"IQ3_S", 256, 110}},  {22, {"IQ2_S", 256, 82}},
    {23, {"IQ4_XS", 256, 136}}, {24, {"I8", 1, 1}},         {25, {"I16", 1, 2}},
    {26, {"I32", 1, 4}},        {27, {"I64", 1, 8}},        {28, {"F64", 1, 8}},
    {29, {"IQ1_M", 256, 56}},   {30, {"BF16", 1, 2}},       {34, {"TQ1_0", 256, 54}},
    {35, {"TQ2_0", 256, 66}},   {39, {"MXFP4", 32, 17}},
};

class Cursor {
 public:
  explicit Cursor(std::string_view bytes) : b_(bytes) {}
  std::uint64_t pos() const { return pos_; }
  std::uint64_t remaining() const { return b_.size() - pos_; }

  void need(std::uint64_t n, const std::string& what, const std::string& where) const {
    if (n > remaining())
      throw FormatError("truncated file: " + what + " runs past the end of the file (needs " +
                            std::to_string(n) + " bytes at offset " + std::to_string(pos_) + ", " +
                            std::to_string(remaining()) + " left)",
                        where);
  }
  template <class T>
  T read(const std::string& what, const std::string& where) {
    need(sizeof(T), what, where);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));  // GGUF is little-endian, as is every target
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what, const std::string& where) {
    auto len = read<std::uint64_t>(what + " length", where);
    if (len > remaining())
      throw FormatError("truncated file: " + what + " length " + std::to_string(len) +
                            " runs past the end of the file",
                        where);
    std::string s(b_.data() + pos_, static_cast<std::size_t>(len));
    pos_ += len;
    return s;
  }

 private:
  std::string_view b_;
  std::uint64_t pos_ = 0;
};

// Smallest encoding of one value of a type, to reject absurd counts before allocating.
std::uint64_t min_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL: return 1;
    case ValueType::UINT16:
    case ValueType::INT16: return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32: return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
    case ValueType::STRING: return 8;
    case ValueType::ARRAY: return 12;
  }
  return 1;
}

bool known_value_type(std::uint32_t t) { return t <= 12; }

Value read_value(Cursor& c, ValueType type, const std::string& where, int depth) {
  Value v;
  v.type = type;
  switch (type) {
    case ValueType::UINT8: v.u = c.read<std::uint8_t>("value", where); break;
    case ValueType::INT8: v.i = c.read<std::int8_t>("value", where); break;
    case ValueType::UINT16: v.u = c.read<std::uint16_t>("value", where); break;
    case ValueType::INT16: v.i = c.read<std::int16_t>("value", where); break;
    case ValueType::UINT32: v.u = c.read<std::uint32_t>("value", where); break;
    case ValueType::INT32: v.i = c.read<std::int32_t>("value", where); break;
    case ValueType::UINT64: v.u = c.read<std::uint64_t>("value", where); break;
    case ValueType::INT64: v.i = c.read<std::int64_t>("value", where); break;
    case ValueType::FLOAT32: v.f = c.read<float>("value", where); break;
    case ValueType::FLOAT64: v.f = c.read<double>("value", where); break;
    case ValueType::BOOL: {
      auto b = c.read<std::uint8_t>("value", where);
      if (b > 1)
        throw FormatError("bool value " + std::to_string(b) + " is neither 0 nor 1", where);
      v.i = b;
      break;
    }
    case ValueType::STRING: v.s = c.read_string("string value", where); break;
    case ValueType::ARRAY: {
      if (depth >= kMaxArrayDepth) throw FormatError("arrays nested too deeply", where);
      auto et = c.read<std::uint32_t>("array element type", where);
      if (!known_value_type(et))
        throw FormatError("unknown array element type " + std::to_string(et), where);
      v.elem_type = static_cast<ValueType>(et);
      auto n = c.read<std::uint64_t>("array length", where);
      if (n > c.remaining() / min_size(v.elem_type))
        throw FormatError(
            "array length " + std::to_string(n) + " is larger than the rest of the file", where);
      v.array.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t k = 0; k < n; ++k)
        v.array.push_back(read_value(c, v.elem_type, where, depth + 1));
      break;
    }
  }
  return v;
}

std::string key_where(const std::string& file, const std::string& key) {
  return file + ": key '" + key + "'";
}
std::string tensor_where(const std::string& file, const std::string& name) {
  return file + ": tensor '" + name + "'";
}
}  // namespace

const char* value_type_name(ValueType t) {
  static const char* names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                "int32",  "float32", "bool",   "string", "array",
                                "uint64", "int64",   "float64"};
  auto i = static_cast<std::uint32_t>(t);
  return i < 13 ? names[i] : "unknown";
}

const GgmlTypeTraits* ggml_type_traits(std::uint32_t type) {
  for (const auto& e : kTypes)
    if (e.id == type) return &e.traits;
  return nullptr;
}

std::string ggml_type_name(std::uint32_t type) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  return t ? t->name : "type " + std::to_string(type);
}

std::vector<std::int64_t> TensorInfo::torch_shape() const {
  return std::vector<std::int64_t>(ne.rbegin(), ne.rend());
}

Header parse_header(std::string_view bytes, const std::string& file) {
  Cursor c(bytes);
  Header h;
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0)
    throw FormatError("bad magic: not a GGUF file", file);
  c.read<std::uint32_t>("magic", file);
  h.version = c.read<std::uint32_t>("version", file);
  if (h.version != 2 && h.version != 3)
    throw FormatError(
        "unsupported GGUF version " + std::to_string(h.version) + " (2 and 3 are supported)", file);
  auto n_tensors = c.read<std::uint64_t>("tensor count", file);
  auto n_kv = c.read<std::uint64_t>("metadata count", file);
  // each key/value takes at least 13 bytes and each tensor info at least 24
  if (n_kv > c.remaining() / 13)
    throw FormatError("metadata count " + std::to_string(n_kv) +
                          " is absurdly large for the file size (truncated file?)",
                      file);
  if (n_tensors > c.remaining() / 24)
    throw FormatError("tensor count " + std::to_string(n_tensors) +
                          " is absurdly large for the file size (truncated file?)",
                      file);

  for (std::uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.read_string("metadata key", file);
    const std::string where = key_where(file, key);
    auto t = c.read<std::uint32_t>("value type", where);
    if (!known_value_type(t))
      throw FormatError("unknown metadata value type " + std::to_string(t), where);
    Value v = read_value(c, static_cast<ValueType>(t), where, 0);
    if (!h.metadata_index.emplace(key, h.metadata.size()).second)
      throw FormatError("duplicate metadata key", where);
    h.metadata.emplace_back(std::move(key), std::move(v));
  }

  if (auto it = h.metadata_index.find("general.alignment"); it != h.metadata_index.end()) {
    const Value& v = h.metadata[it->second].second;
    const std::string where = key_where(file, "general.alignment");
    if (v.type != ValueType::UINT32 && v.type != ValueType::UINT64 && v.type != ValueType::INT32 &&
        v.type != ValueType::UINT16 && v.type != ValueType::UINT8)
      throw FormatError(
          std::string("alignment has type ") + value_type_name(v.type) + ", not an integer", where);
    std::uint64_t a = v.type == ValueType::INT32 ? static_cast<std::uint64_t>(v.i) : v.u;
    if (v.type == ValueType::INT32 && v.i <= 0) a = 0;
    if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 20))
      throw FormatError("alignment " + std::to_string(a) + " is not a power of two up to 1 MiB",
                        where);
    h.alignment = a;
  }

  for (std::uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo ti;
    ti.name = c.read_string("tensor name", file);
    const std::string where = tensor_where(file, ti.name);
    auto n_dims = c.read<std::uint32_t>("dimension count", where);
    if (n_dims > kMaxDims)
      throw FormatError(std::to_string(n_dims) + " dimensions (at most 4 are allowed)", where);
    unsigned __int128 n = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      auto dim = c.read<std::uint64_t>("dimension", where);
      ti.ne.push_back(dim);
      n *= dim;
      if (n > static_cast<unsigned __int128>(std::numeric_limits<std::int64_t>::max()))
        throw FormatError("dimensions overflow (element count exceeds 2^63)", where);
    }
    for (auto dim : ti.ne)
      if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        throw FormatError("dimension too large", where);
    ti.n_elements = static_cast<std::uint64_t>(n);
    ti.type = c.read<std::uint32_t>("tensor type", where);
    const GgmlTypeTraits* tr = ggml_type_traits(ti.type);
    if (!tr) throw FormatError("unknown ggml type " + std::to_string(ti.type), where);
    ti.offset = c.read<std::uint64_t>("tensor offset", where);
    const std::uint64_t ne0 = ti.ne.empty() ? 1 : ti.ne[0];
    if (ne0 % tr->block_size != 0)
      throw FormatError("row length " + std::to_string(ne0) + " is not a multiple of the " +
                            tr->name + " block size " + std::to_string(tr->block_size),
                        where);
    const unsigned __int128 n_bytes =
        static_cast<unsigned __int128>(ti.n_elements / tr->block_size) * tr->type_size;
    if (n_bytes > bytes.size())
      throw FormatError("tensor data (" + std::to_string(ti.n_elements) + " " + tr->name +
                            " elements) is larger than the file",
                        where);
    ti.n_bytes = static_cast<std::uint64_t>(n_bytes);
    if (ti.offset % h.alignment != 0)
      throw FormatError("data offset " + std::to_string(ti.offset) +
                            " is not a multiple of the alignment " + std::to_string(h.alignment),
                        where);
    if (!h.tensor_index.emplace(ti.name, h.tensors.size()).second)
      throw FormatError("duplicate tensor name", where);
    h.tensors.push_back(std::move(ti));
  }

  const std::uint64_t end_of_infos = c.pos();
  h.data_offset = (end_of_infos + h.alignment - 1) / h.alignment * h.alignment;
  const std::uint64_t size = bytes.size();
  for (const TensorInfo& ti : h.tensors) {
    const std::string where = tensor_where(file, ti.name);
    const std::uint64_t avail = h.data_offset <= size ? size - h.data_offset : 0;
    if (ti.offset > avail || ti.n_bytes > avail - ti.offset)
      throw FormatError("tensor data [" + std::to_string(ti.offset) + ", +" +
                            std::to_string(ti.n_bytes) + ") runs past the end of the file",
                        where);
  }
  // Two tensors sharing bytes: llama.cpp's writer never produces it, and accepting it would let one
  // tensor's data silently stand for another's.
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& ti : h.tensors)
    if (ti.n_bytes > 0) by_offset.push_back(&ti);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& ti = *by_offset[i];
    if (prev.offset + prev.n_bytes > ti.offset)
      throw FormatError("tensor data [" + std::to_string(ti.offset) + ", +" +
                            std::to_string(ti.n_bytes) + ") overlaps the data of tensor '" +
                            prev.name + "' [" + std::to_string(prev.offset) + ", +" +
                            std::to_string(prev.n_bytes) + ")",
                        tensor_where(file, ti.name));
  }
  return h;
}

}  // namespace safetune::io::gguf
