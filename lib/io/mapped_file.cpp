// MappedFile: open + fstat + mmap, with IoError naming the file on failure.
#include "io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::io {

std::shared_ptr<MappedFile> MappedFile::open(const std::filesystem::path& path) {
  require_regular_file(path);
  // O_NONBLOCK too: should the path become a FIFO between the check and here, open() still returns.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    throw IoError(std::string("cannot open file: ") + std::strerror(errno), path.string());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError("not a regular file", path.string());
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = static_cast<std::uint64_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw IoError(std::string("mmap failed: ") + std::strerror(e), path.string());
    }
    m->data_ = static_cast<std::uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps its own reference
  return m;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace safetune::io
