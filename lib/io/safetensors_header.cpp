// Validates a safetensors header before any byte of tensor data is trusted; torch-free for fuzzing.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "io/safetensors_header.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::io {
namespace {
using json = nlohmann::json;

std::string tensor_where(const std::string& file, const std::string& name) {
  return file + ": tensor '" + name + "'";
}

// The format nests at most three levels; rejecting deeper input up front keeps the JSON library's
// recursive paths (destruction, type checks) away from attacker-chosen depth.
bool nesting_within(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') {
      if (++depth > limit) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

std::uint64_t read_u64_le(const char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
}  // namespace

std::size_t safetensors_dtype_size(std::string_view d) {
  if (d == "BOOL" || d == "U8" || d == "I8" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  return 0;
}

SafetensorsHeader safetensors_parse_header(std::string_view bytes, std::uint64_t file_size,
                                           const std::string& file) {
  if (file_size < 8 || bytes.size() < 8)
    throw FormatError(
        "file is shorter than the 8-byte header length (" + std::to_string(file_size) + " bytes)",
        file);
  const std::uint64_t header_len = read_u64_le(bytes.data());
  if (header_len > kSafetensorsMaxHeader)
    throw FormatError(
        "header length " + std::to_string(header_len) + " exceeds the 100 MB header size limit",
        file);
  if (header_len > file_size - 8)
    throw FormatError("header length " + std::to_string(header_len) +
                          " runs past the end of the file (" + std::to_string(file_size) +
                          " bytes)",
                      file);
  if (bytes.size() < 8 + header_len) throw FormatError("header truncated", file);
  std::string_view text = bytes.substr(8, header_len);
  if (!nesting_within(text, 8)) throw FormatError("malformed JSON header: nested too deeply", file);

  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      auto key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json root = json::parse(text.begin(), text.end(), on_event, /*allow_exceptions=*/false);
  if (root.is_discarded()) throw FormatError("malformed JSON header", file);
  if (!root.is_object()) throw FormatError("JSON header is not an object", file);
  if (!duplicate.empty())
    throw FormatError("duplicate tensor name in header", tensor_where(file, duplicate));

  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const std::uint64_t data_size = file_size - out.data_offset;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) throw FormatError("__metadata__ is not an object", file);
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          throw FormatError("__metadata__ value of '" + m.key() + "' is not a string", file);
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = tensor_where(file, name);
    if (!entry.is_object()) throw FormatError("entry is not an object", where);
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string())
      throw FormatError("missing or non-string dtype", where);
    if (sh == entry.end() || !sh->is_array())
      throw FormatError("missing or non-array shape", where);
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      throw FormatError("data_offsets must be an array of two offsets", where);
    TensorInfo info;
    info.name = name;
    info.dtype = dt->get<std::string>();
    const std::size_t elem = safetensors_dtype_size(info.dtype);
    if (elem == 0) throw FormatError("unknown dtype '" + info.dtype + "'", where);
    // numel * elem, refusing anything that would not fit in 63 bits
    unsigned __int128 bytes_needed = elem;
    for (const json& d : *sh) {
      if (d.is_number_integer() && !d.is_number_unsigned() && d.get<std::int64_t>() < 0)
        throw FormatError(
            "negative dimension " + std::to_string(d.get<std::int64_t>()) + " in shape", where);
      if (!d.is_number_unsigned())
        throw FormatError("shape entry is not a non-negative integer", where);
      std::uint64_t v = d.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(INT64_MAX))
        throw FormatError("dimension too large", where);
      info.shape.push_back(static_cast<int64_t>(v));
      bytes_needed *= v;
      if (bytes_needed > static_cast<unsigned __int128>(INT64_MAX))
        bytes_needed = static_cast<unsigned __int128>(INT64_MAX) + 1;  // saturate; mismatch below
    }
    for (const json& o : *off)
      if (!o.is_number_unsigned())
        throw FormatError("data_offsets entry is not a non-negative integer", where);
    info.begin = (*off)[0].get<std::uint64_t>();
    info.end = (*off)[1].get<std::uint64_t>();
    if (info.end < info.begin)
      throw FormatError("data_offsets end " + std::to_string(info.end) + " is before begin " +
                            std::to_string(info.begin),
                        where);
    if (info.end > data_size)
      throw FormatError("byte range [" + std::to_string(info.begin) + ", " +
                            std::to_string(info.end) + ") is outside the data buffer (" +
                            std::to_string(data_size) + " bytes)",
                        where);
    if (bytes_needed != static_cast<unsigned __int128>(info.end - info.begin))
      throw FormatError("shape x dtype size does not match the byte range (" +
                            std::to_string(info.end - info.begin) + " bytes for dtype " +
                            info.dtype + ")",
                        where);
    out.tensors.push_back(std::move(info));
  }
  std::stable_sort(out.tensors.begin(), out.tensors.end(),
                   [](const TensorInfo& a, const TensorInfo& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  // Sorted by begin, an overlap can only be with the previous non-empty range.
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : out.tensors) {
    if (t.begin == t.end) continue;
    if (prev && t.begin < prev->end)
      throw FormatError("byte range overlaps tensor '" + prev->name + "'",
                        tensor_where(file, t.name));
    prev = &t;
  }
  return out;
}

SafetensorsHeader safetensors_read_header(const std::filesystem::path& file) {
  require_regular_file(file);
  std::ifstream in(file, std::ios::binary);
  if (!in) throw IoError("cannot open file", file.string());
  in.seekg(0, std::ios::end);
  const std::uint64_t size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);
  std::string buf(std::min<std::uint64_t>(size, 8), '\0');
  in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
  if (size >= 8) {
    std::uint64_t len = read_u64_le(buf.data());
    if (len <= kSafetensorsMaxHeader && len <= size - 8) {
      buf.resize(8 + len);
      in.read(buf.data() + 8, static_cast<std::streamsize>(len));
      if (!in) throw IoError("read failed", file.string());
    }
  }
  return safetensors_parse_header(buf, size, file.string());
}

}  // namespace safetune::io
