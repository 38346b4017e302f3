// Console logging setup, the JSONL metrics writer and a progress display for long loops.
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <variant>

namespace safetune {

enum class LogLevel { trace, debug, info, warn, error, off };

// Parses "trace|debug|info|warn|error|off"; UsageError otherwise.
LogLevel parse_log_level(const std::string& name);
// Configures the process-wide spdlog console logger (stderr). quiet == only warnings and errors.
void log_setup(LogLevel level, bool quiet = false);
bool log_quiet();
// Logging calls for library code. They take finished strings so that no formatting library leaks
// into headers (torch bundles its own fmt; spdlog is built against Debian's).
void log_trace(const std::string& msg);
void log_debug(const std::string& msg);
void log_info(const std::string& msg);
void log_warn(const std::string& msg);
void log_error(const std::string& msg);
bool log_enabled(LogLevel level);

// Appends one JSON object per line. Each line is flushed so a crash loses at most the line being
// written; a torn last line is skipped by read_metrics().
class MetricsWriter {
 public:
  using Value = std::variant<std::int64_t, double, std::string, bool>;
  explicit MetricsWriter(std::filesystem::path path, bool append = true);
  void write(const std::map<std::string, Value>& record);
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

// A progress display: a bar with rate and ETA redrawn on a terminal, a log line every
// `log_every` when stderr is not a terminal (CI logs), nothing when quiet.
class Progress {
 public:
  Progress(std::string label, std::int64_t total, std::string unit = "it");
  ~Progress();
  void advance(std::int64_t n = 1);
  void set_postfix(std::string text);
  void finish();

 private:
  void draw(bool force);
  std::string label_, unit_, postfix_;
  std::int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool tty_, finished_ = false;
  std::chrono::milliseconds log_every_{10000};
};

std::string format_duration(double seconds);

}  // namespace safetune
