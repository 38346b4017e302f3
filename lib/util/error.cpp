// Formats safetune::Error as "where: what (hint: ...)" so one line tells the whole story.
#include "safetune/error.hpp"

namespace safetune {
namespace {
std::string format(const std::string& what, const std::string& where, const std::string& hint) {
  std::string s = where.empty() ? what : where + ": " + what;
  if (!hint.empty()) s += " (hint: " + hint + ")";
  return s;
}
}  // namespace

Error::Error(std::string what, std::string where, std::string hint)
    : std::runtime_error(format(what, where, hint)),
      what_(std::move(what)),
      where_(std::move(where)),
      hint_(std::move(hint)) {}

}  // namespace safetune
