// TensorBoard event files: TFRecord framing and the Event / Summary protobuf fields, by hand.
#include "safetune/train/tensorboard.hpp"

#include <unistd.h>

#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <type_traits>
#include <variant>

#include "safetune/error.hpp"

namespace safetune::train {

namespace {
constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k)
      c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = make_crc_table();

// Little-endian fixed-width and varint encodings (protobuf wire format).
template <typename T>
void put_fixed(std::string& out, T value) {
  static_assert(std::endian::native == std::endian::little, "event files are little-endian");
  char buf[sizeof(T)];
  std::memcpy(buf, &value, sizeof(T));
  out.append(buf, sizeof(T));
}
void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_bytes(std::string& out, std::uint32_t field, std::string_view bytes) {
  put_varint(out, (field << 3) | 2);  // wire type 2: length-delimited
  put_varint(out, bytes.size());
  out.append(bytes);
}

// Event { double wall_time = 1; int64 step = 2; oneof { string file_version = 3; Summary summary =
// 5; } }
std::string event_header(std::int64_t step) {
  std::string e;
  const double wall =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  put_varint(e, (1 << 3) | 1);  // wire type 1: 64-bit
  put_fixed(e, wall);
  put_varint(e, (2 << 3) | 0);  // wire type 0: varint
  put_varint(e, static_cast<std::uint64_t>(step));
  return e;
}
}  // namespace

std::uint32_t crc32c(std::string_view bytes) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = kCrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::uint32_t masked_crc32c(std::string_view bytes) {
  const std::uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  // TensorBoard finds files by "tfevents" in the name; time, host and pid keep names unique.
  path_ = dir / ("events.out.tfevents." + std::to_string(now) + "." + host + "." +
                 std::to_string(getpid()) + ".safetune");
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw IoError("cannot open TensorBoard event file for writing", path_.string());
  std::string e = event_header(0);
  put_bytes(e, 3, "brain.Event:2");
  write_record(e);
}

void TensorBoardWriter::write(const std::map<std::string, MetricsWriter::Value>& record) {
  std::int64_t step = 0;
  if (auto it = record.find("step");
      it != record.end() && std::holds_alternative<std::int64_t>(it->second))
    step = std::get<std::int64_t>(it->second);
  // Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
  std::string summary;
  for (const auto& [key, v] : record) {
    if (key == "step") continue;
    float x = 0;
    bool numeric = std::visit(
        [&](const auto& y) {
          using T = std::decay_t<decltype(y)>;
          if constexpr (std::is_same_v<T, std::string>) {
            return false;
          } else {
            x = static_cast<float>(y);
            return true;
          }
        },
        v);
    if (!numeric) continue;
    std::string value;
    put_bytes(value, 1, key);
    put_varint(value, (2 << 3) | 5);  // wire type 5: 32-bit
    put_fixed(value, x);
    put_bytes(summary, 1, value);
  }
  std::string e = event_header(step);
  put_bytes(e, 5, summary);
  write_record(e);
}

void TensorBoardWriter::write_record(const std::string& event) {
  std::string rec;
  put_fixed(rec, static_cast<std::uint64_t>(event.size()));
  put_fixed(rec, masked_crc32c(rec));
  rec += event;
  put_fixed(rec, masked_crc32c(event));
  out_.write(rec.data(), static_cast<std::streamsize>(rec.size()));
  out_.flush();
  if (!out_) throw IoError("cannot write TensorBoard event file", path_.string());
}

}  // namespace safetune::train
