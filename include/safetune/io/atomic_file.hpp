// Crash-safe writes: data goes to a temp file beside the target, is fsynced, then renamed over it.
#pragma once
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace safetune::io {

// Writes through a temporary file in the target's directory. Nothing is visible at `path` until
// commit(); a destroyed, uncommitted AtomicFile removes its temporary and leaves `path` untouched.
// A `path` that is a symbolic link (or a chain of them) is written at its final target, so the
// link stays a link; path() returns that target.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t size);
  void write(std::string_view text) { write(text.data(), text.size()); }
  std::size_t bytes_written() const noexcept { return written_; }
  // fsync the data, rename over the target, fsync the directory.
  void commit();
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_, temp_;
  int fd_ = -1;
  std::size_t written_ = 0;
  bool committed_ = false;
};

// `path` with its final component's symbolic links followed (chains included; a dangling link gives
// the path it names); other paths unchanged. IoError on a loop.
std::filesystem::path final_target(std::filesystem::path path);

// Whole-buffer convenience.
void atomic_write(const std::filesystem::path& path, std::string_view bytes);

// IoError naming the path unless it is an existing regular file (after symlinks). Checked before
// opening, so that a FIFO or device never blocks a reader.
void require_regular_file(const std::filesystem::path& path);

// Reads a whole file; IoError naming the path when it is missing, not a regular file or unreadable.
std::string read_file(const std::filesystem::path& path);

}  // namespace safetune::io
