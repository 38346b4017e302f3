// An exclusive, process-lifetime lock on a directory (flock on a lock file inside it), so that two
// runs never write into the same output directory at once.
#pragma once
#include <filesystem>
#include <string>

namespace safetune::io {

class DirectoryLock {
 public:
  // The name of the lock file inside the locked directory; it also marks a directory as a run
  // directory written by safetune.
  static constexpr const char* kFileName = ".safetune.lock";

  DirectoryLock() = default;
  // Creates `dir/.safetune.lock` if needed and takes an exclusive flock on it without waiting;
  // writes this process's pid into it. IoError naming the directory and the holder's pid when
  // another process holds it. The lock ends with the object (or the process).
  explicit DirectoryLock(const std::filesystem::path& dir);
  ~DirectoryLock();
  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  bool held() const noexcept { return fd_ >= 0; }
  // True when this lock created the lock file (the directory had none before).
  bool created_file() const noexcept { return created_; }
  const std::filesystem::path& file() const noexcept { return file_; }
  // Releases the lock and removes the lock file (for a directory the run then refused to use).
  void release_and_remove();

 private:
  std::filesystem::path file_;
  int fd_ = -1;
  bool created_ = false;
};

}  // namespace safetune::io
