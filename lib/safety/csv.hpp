// A small RFC 4180 CSV reader for the public benchmark layouts (quoted fields, "" escapes, CRLF).
// Internal to safety/.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace safetune::safety {

struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // each as long as header
  std::vector<std::size_t> row_lines;          // 1-based line where each row starts
  // Column index by name (exact first, then case-insensitive); -1 when absent.
  int column(const std::string& name) const;
};

// Parses `text`; the first record is the header. A UTF-8 BOM is skipped; quoted fields may hold
// commas, quotes ("") and newlines; a final newline is optional; blank lines are skipped.
// FormatError "origin:line: ..." on an unterminated quote, a stray quote inside an unquoted
// field, text after a closing quote, a row whose field count differs from the header, duplicate
// header names, or invalid UTF-8. Unnamed columns are allowed (a pandas index).
CsvTable parse_csv(const std::string& text, const std::string& origin);
CsvTable read_csv(const std::string& path);

}  // namespace safetune::safety
