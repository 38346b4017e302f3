// The text of one progress line (Progress draws it; tests check it): pure formatting.
#pragma once
#include <cstdint>
#include <string>

namespace safetune {

// "label  42/100 [=====>    ] 3.10 it/s ETA 0:18 elapsed 0:13  postfix"; the bar only when total >
// 0.
std::string progress_line(const std::string& label, std::int64_t done, std::int64_t total,
                          double seconds, const std::string& unit, const std::string& postfix,
                          int width = 30);

}  // namespace safetune
