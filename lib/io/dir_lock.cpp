// DirectoryLock: flock(LOCK_EX | LOCK_NB) on a lock file; the kernel drops it when the process
// dies, so a killed run never leaves a stale lock behind (the file stays, the lock does not).
#include "safetune/io/dir_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "safetune/error.hpp"

namespace safetune::io {
namespace fs = std::filesystem;

DirectoryLock::DirectoryLock(const fs::path& dir) : file_(dir / kFileName) {
  std::error_code ec;
  created_ = !fs::exists(file_, ec);
  fd_ = ::open(file_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw IoError(std::string("cannot create the run lock: ") + std::strerror(errno),
                  file_.string());
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder;
    char buf[32] = {};
    if (::pread(fd_, buf, sizeof buf - 1, 0) > 0) holder = buf;
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw IoError("run directory is in use by another safetune run" +
                        (holder.empty() ? std::string() : " (pid " + holder + ")"),
                    dir.string(), "wait for it to finish or choose another run.output_dir");
    throw IoError(std::string("cannot lock the run directory: ") + std::strerror(err),
                  file_.string());
  }
  // Only the holder writes its pid, and only now that it holds the lock.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The pid is a courtesy for the error message of a second run; the lock itself holds.
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor drops the flock
}

DirectoryLock::DirectoryLock(DirectoryLock&& o) noexcept
    : file_(std::move(o.file_)), fd_(std::exchange(o.fd_, -1)), created_(o.created_) {}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    file_ = std::move(o.file_);
    fd_ = std::exchange(o.fd_, -1);
    created_ = o.created_;
  }
  return *this;
}

void DirectoryLock::release_and_remove() {
  if (fd_ < 0) return;
  std::error_code ec;
  fs::remove(file_, ec);  // removed while still held: no other run can take it in between
  ::close(fd_);
  fd_ = -1;
}

}  // namespace safetune::io
