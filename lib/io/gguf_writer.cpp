// GgufWriter: GGUF v3 serialisation (little-endian; alignment 32, the format's default).
#include "safetune/io/gguf_writer.hpp"

#include <ATen/ATen.h>

#include <bit>
#include <cstring>

#include "io/gguf_format.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::io {
static_assert(std::endian::native == std::endian::little,
              "the GGUF writer assumes a little-endian host");

namespace {
constexpr std::uint64_t kAlignment = 32;

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<std::uint64_t>(out, s.size());
  out += s;
}
std::uint64_t aligned(std::uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

gguf::GgmlType ggml_type_of(const at::Tensor& t, const std::string& name) {
  switch (t.scalar_type()) {
    case at::kFloat: return gguf::GgmlType::F32;
    case at::kHalf: return gguf::GgmlType::F16;
    case at::kBFloat16: return gguf::GgmlType::BF16;
    default:
      throw FormatError(std::string("cannot store ") + c10::toString(t.scalar_type()) +
                            " in GGUF (F32, F16 or BF16)",
                        "tensor '" + name + "'");
  }
}
}  // namespace

void GgufWriter::add(const std::string& key, gguf::ValueType type, std::string payload) {
  for (const auto& kv : kv_)
    if (kv.key == key) throw FormatError("duplicate GGUF key", "key '" + key + "'");
  kv_.push_back({key, type, std::move(payload)});
}
void GgufWriter::add_string(const std::string& key, const std::string& value) {
  std::string p;
  put_string(p, value);
  add(key, gguf::ValueType::STRING, std::move(p));
}
void GgufWriter::add_uint32(const std::string& key, std::uint32_t value) {
  std::string p;
  put(p, value);
  add(key, gguf::ValueType::UINT32, std::move(p));
}
void GgufWriter::add_float32(const std::string& key, float value) {
  std::string p;
  put(p, value);
  add(key, gguf::ValueType::FLOAT32, std::move(p));
}
void GgufWriter::add_bool(const std::string& key, bool value) {
  std::string p;
  put<std::uint8_t>(p, value ? 1 : 0);
  add(key, gguf::ValueType::BOOL, std::move(p));
}

void GgufWriter::add_tensor(const std::string& name, const at::Tensor& tensor) {
  ggml_type_of(tensor, name);
  if (tensor.dim() < 1 || tensor.dim() > 4)
    throw FormatError("GGUF tensors have 1 to 4 dimensions", "tensor '" + name + "'");
  for (const auto& [n, t] : tensors_)
    if (n == name) throw FormatError("duplicate GGUF tensor", "tensor '" + name + "'");
  tensors_.emplace_back(name, tensor.detach().to(at::kCPU).contiguous());
}

void GgufWriter::write(const std::filesystem::path& path) const {
  std::string head;
  head += "GGUF";
  put<std::uint32_t>(head, 3);
  put<std::uint64_t>(head, tensors_.size());
  put<std::uint64_t>(head, kv_.size());
  for (const auto& kv : kv_) {
    put_string(head, kv.key);
    put<std::uint32_t>(head, static_cast<std::uint32_t>(kv.type));
    head += kv.payload;
  }
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    put_string(head, name);
    put<std::uint32_t>(head, static_cast<std::uint32_t>(t.dim()));
    for (std::int64_t d = t.dim() - 1; d >= 0; --d)
      put<std::uint64_t>(head, static_cast<std::uint64_t>(t.size(d)));
    put<std::uint32_t>(head, static_cast<std::uint32_t>(ggml_type_of(t, name)));
    put<std::uint64_t>(head, offset);
    offset = aligned(offset + t.nbytes());
  }
  head.resize(aligned(head.size()), '\0');

  AtomicFile file(path);
  file.write(head);
  static const char zeros[kAlignment] = {};
  for (const auto& [name, t] : tensors_) {
    file.write(t.data_ptr(), t.nbytes());
    file.write(zeros, aligned(t.nbytes()) - t.nbytes());
  }
  file.commit();
}

}  // namespace safetune::io
