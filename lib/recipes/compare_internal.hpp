// Private helpers shared by the comparison's files (recipe, statistics, tables, plot).
#pragma once
#include <cstdio>
#include <limits>
#include <string>

#include "safetune/recipes/compare.hpp"

namespace safetune::recipes::compare_detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Regularizers whose lambda changes nothing: a lambda grid runs them once.
inline bool uses_lambda(const std::string& name) {
  return name != "none" && name != "replay" && name != "gradient_projection" && name != "ema";
}

inline std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// Whether a cell belongs to a row: same task data, variant and lambda (its seeds make the row).
inline bool in_row(const CompareRow& r, const CellResult& c) {
  return r.task_mix == c.task_mix && r.variant == c.variant && r.lambda == c.lambda;
}

// A row's name in the tables and the plot: the variant, its task data and its swept lambda.
inline std::string row_name(const CompareRow& r) {
  std::string s = r.variant;
  if (!r.task_mix.empty()) s = r.task_mix + " / " + s;
  if (r.lambda_swept) s += " (lambda=" + fmt("%g", r.lambda) + ")";
  return s;
}

}  // namespace safetune::recipes::compare_detail
