// What the report and its charts share: number formatting. Internal to safety/.
#pragma once
#include <cmath>
#include <cstdio>
#include <string>

namespace safetune::safety::report_format {

// `v` with `digits` decimals; "n/a" when it is not finite.
inline std::string num(double v, int digits = 1) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace safetune::safety::report_format
