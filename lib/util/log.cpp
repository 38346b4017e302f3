// spdlog setup, MetricsWriter and Progress.
#include "safetune/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "util/progress.hpp"

namespace safetune {
namespace {
std::atomic<bool> g_quiet{false};
}

LogLevel parse_log_level(const std::string& name) {
  static const std::map<std::string, LogLevel> levels{
      {"trace", LogLevel::trace}, {"debug", LogLevel::debug}, {"info", LogLevel::info},
      {"warn", LogLevel::warn},   {"error", LogLevel::error}, {"off", LogLevel::off}};
  auto it = levels.find(name);
  if (it == levels.end())
    throw UsageError("unknown log level '" + name + "'", "--log-level",
                     "one of trace, debug, info, warn, error, off");
  return it->second;
}

void log_setup(LogLevel level, bool quiet) {
  g_quiet = quiet;
  auto logger = spdlog::get("safetune");
  if (!logger) {
    logger = spdlog::stderr_color_mt("safetune");
    spdlog::set_default_logger(logger);
  }
  spdlog::set_pattern("%^[%H:%M:%S %L]%$ %v");
  auto lvl = static_cast<spdlog::level::level_enum>(static_cast<int>(level));
  if (quiet && lvl < spdlog::level::warn) lvl = spdlog::level::warn;
  spdlog::set_level(lvl);
}

bool log_quiet() { return g_quiet; }

void log_trace(const std::string& msg) { spdlog::trace("{}", msg); }
void log_debug(const std::string& msg) { spdlog::debug("{}", msg); }
void log_info(const std::string& msg) { spdlog::info("{}", msg); }
void log_warn(const std::string& msg) { spdlog::warn("{}", msg); }
void log_error(const std::string& msg) { spdlog::error("{}", msg); }
bool log_enabled(LogLevel level) {
  return spdlog::should_log(static_cast<spdlog::level::level_enum>(static_cast<int>(level)));
}

MetricsWriter::MetricsWriter(std::filesystem::path path, bool append) : path_(std::move(path)) {
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
  out_.open(path_, append ? std::ios::app : std::ios::trunc);
  if (!out_) throw IoError("cannot open metrics file for writing", path_.string());
}

void MetricsWriter::write(const std::map<std::string, Value>& record) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : record) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, double>) {
            j[k] = std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(std::to_string(x));
          } else {
            j[k] = x;
          }
        },
        v);
  }
  out_ << j.dump() << '\n';
  out_.flush();
  if (!out_) throw IoError("write failed", path_.string());
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<long long>(std::llround(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

Progress::Progress(std::string label, std::int64_t total, std::string unit)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_),
      tty_(::isatty(STDERR_FILENO) == 1) {}

Progress::~Progress() {
  if (!finished_) finish();
}

void Progress::advance(std::int64_t n) {
  done_ += n;
  draw(false);
}

void Progress::set_postfix(std::string text) { postfix_ = std::move(text); }

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
  if (tty_ && !log_quiet()) std::fputc('\n', stderr);
}

std::string progress_line(const std::string& label, std::int64_t done, std::int64_t total,
                          double seconds, const std::string& unit, const std::string& postfix,
                          int width) {
  double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  std::string out = label + "  " + std::to_string(done);
  if (total > 0) {
    out += "/" + std::to_string(total) + " [";
    int filled =
        static_cast<int>(static_cast<double>(width) * std::min<double>(done, total) / total);
    for (int i = 0; i < width; ++i) out += i < filled ? '=' : (i == filled ? '>' : ' ');
    out += "]";
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, " %.2f %s/s", rate, unit.c_str());
  out += buf;
  if (total > 0 && rate > 0)
    out += " ETA " + format_duration(static_cast<double>(total - done) / rate);
  out += " elapsed " + format_duration(seconds);
  if (!postfix.empty()) out += "  " + postfix;
  return out;
}

void Progress::draw(bool force) {
  if (log_quiet()) return;
  auto now = std::chrono::steady_clock::now();
  auto since = now - last_draw_;
  if (!force && since < (tty_ ? std::chrono::milliseconds(100) : log_every_)) return;
  last_draw_ = now;
  double secs = std::chrono::duration<double>(now - start_).count();
  std::string line = progress_line(label_, done_, total_, secs, unit_, postfix_);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    std::fflush(stderr);
  } else {
    spdlog::info("{}", line);
  }
}

}  // namespace safetune
