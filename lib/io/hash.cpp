// SHA-256 through OpenSSL's EVP interface.
#include "safetune/io/hash.hpp"

#include <openssl/evp.h>

#include <fstream>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::io {

struct Sha256::Ctx {
  EVP_MD_CTX* md = nullptr;
  ~Ctx() {
    if (md) EVP_MD_CTX_free(md);
  }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  if (!ctx_->md || EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) != 1)
    throw IoError("cannot initialise SHA-256");
}
Sha256::~Sha256() = default;

void Sha256::update(const void* data, std::size_t n) {
  if (n && EVP_DigestUpdate(ctx_->md, data, n) != 1) throw IoError("SHA-256 update failed");
}

std::string Sha256::hex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (EVP_DigestFinal_ex(ctx_->md, md, &len) != 1) throw IoError("SHA-256 finalise failed");
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < len; ++i) s += digits[md[i] >> 4], s += digits[md[i] & 15];
  return s;
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 h;
  h.update(bytes);
  return h.hex();
}

void Sha256::update_file(const std::filesystem::path& path) {
  require_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot open for hashing", path.string());
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    update(buf, static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) throw IoError("read failed while hashing", path.string());
}

std::string sha256_file(const std::filesystem::path& path) {
  Sha256 h;
  h.update_file(path);
  return h.hex();
}

}  // namespace safetune::io
