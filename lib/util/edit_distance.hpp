// Levenshtein distance for "did you mean" suggestions (library-internal, shared by every area).
#pragma once
#include <cstddef>
#include <string_view>

namespace safetune {

std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace safetune
