// TensorBoard event files (events.out.tfevents.*) written without TensorFlow or Python.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>

#include "safetune/log.hpp"

namespace safetune::train {

// One event file in `dir`: the file-version event, then one event per write() holding every
// numeric value of the record (int, float, bool) as a scalar summary tagged with its key, at the
// record's "step". Strings are skipped. Each record is flushed, so `tensorboard --logdir` shows a
// run while it trains. Format: TFRecord framing (u64 length, masked CRC32C of it, an Event
// protobuf, masked CRC32C of it); the few protobuf fields are encoded here by hand.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  void write(const std::map<std::string, MetricsWriter::Value>& record);
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void write_record(const std::string& event);
  std::filesystem::path path_;
  std::ofstream out_;
};

// CRC-32C (Castagnoli), and TFRecord's rotated-and-offset form of it (exposed for tests).
std::uint32_t crc32c(std::string_view bytes);
std::uint32_t masked_crc32c(std::string_view bytes);

}  // namespace safetune::train
