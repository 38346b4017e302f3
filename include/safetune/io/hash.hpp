// SHA-256 (OpenSSL) for content hashes of weights, adapters, datasets and probe suites.
#pragma once
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace safetune::io {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  void update_file(const std::filesystem::path& path);  // IoError naming the file
  std::string hex();                                    // finishes the digest

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string sha256_hex(std::string_view bytes);
// Streams the file; IoError naming it when unreadable.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace safetune::io
