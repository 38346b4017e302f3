// AtomicFile: temp file + fsync + rename + directory fsync (POSIX).
#include "safetune/io/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "safetune/error.hpp"

namespace safetune::io {
namespace fs = std::filesystem;

namespace {
std::string errno_text() { return std::strerror(errno); }

// The pid is part of the name: a forked child inherits the generator's state, and a writer killed
// mid-write leaves its temporary file behind, so the same suffix could otherwise come up again.
std::string random_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%d-%016llx", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

void fsync_directory(const fs::path& dir) {
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd < 0) return;  // best effort: some filesystems refuse directory handles
  ::fsync(dfd);
  ::close(dfd);
}
}  // namespace

// A write through a symbolic link must update the file it points to: rename() onto the link would
// replace the link itself by a regular file and leave its target (say, the real registry) as it
// was.
fs::path final_target(fs::path p) {
  for (int hops = 0; hops < 40; ++hops) {
    std::error_code ec;
    if (!fs::is_symlink(p, ec)) return p;
    fs::path t = fs::read_symlink(p, ec);
    if (ec) throw IoError("cannot read symbolic link: " + ec.message(), p.string());
    p = t.is_absolute() ? t : p.parent_path() / t;
  }
  throw IoError("too many levels of symbolic links", p.string());
}

AtomicFile::AtomicFile(fs::path path) : path_(final_target(std::move(path))) {
  fs::path dir = path_.parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw IoError("cannot create directory: " + ec.message(), dir.string());
  }
  for (int attempt = 0; attempt < 8 && fd_ < 0; ++attempt) {
    temp_ = path_;
    temp_ += ".tmp-" + random_suffix();
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  if (fd_ < 0) throw IoError("cannot create temporary file: " + errno_text(), temp_.string());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) {
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void AtomicFile::write(const void* data, std::size_t size) {
  if (committed_ || fd_ < 0) throw IoError("write after commit", path_.string());
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError("write failed: " + errno_text(), temp_.string());
    }
    p += n;
    size -= static_cast<std::size_t>(n);
    written_ += static_cast<std::size_t>(n);
  }
}

void AtomicFile::commit() {
  if (committed_) return;
  if (::fsync(fd_) != 0) throw IoError("fsync failed: " + errno_text(), temp_.string());
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw IoError("close failed: " + errno_text(), temp_.string());
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0)
    throw IoError("rename failed: " + errno_text(), path_.string());
  committed_ = true;
  fsync_directory(path_.parent_path());
}

void atomic_write(const fs::path& path, std::string_view bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

void require_regular_file(const fs::path& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (!fs::exists(st)) throw IoError("no such file", path.string());
  if (fs::is_directory(st)) throw IoError("is a directory, expected a file", path.string());
  if (!fs::is_regular_file(st))
    throw IoError("not a regular file (a FIFO, socket or device); refusing to read it",
                  path.string());
}

std::string read_file(const fs::path& path) {
  require_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot open for reading", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError("read failed", path.string());
  return ss.str();
}

}  // namespace safetune::io
