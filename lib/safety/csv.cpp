// RFC 4180 CSV reading for the public benchmark layouts (AdvBench, XSTest, JailbreakBench).
#include "safety/csv.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/probes.hpp"

namespace safetune::safety {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

}  // namespace

int CsvTable::column(const std::string& name) const {
  for (std::size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return static_cast<int>(i);
  const std::string want = lower(name);
  for (std::size_t i = 0; i < header.size(); ++i)
    if (lower(trim(header[i])) == want) return static_cast<int>(i);
  return -1;
}

CsvTable parse_csv(const std::string& input, const std::string& origin) {
  if (auto bad = utf8_invalid_offset(input); bad != std::string::npos) {
    std::size_t line =
        1 + static_cast<std::size_t>(std::count(input.begin(), input.begin() + bad, '\n'));
    throw FormatError("invalid UTF-8 at byte " + std::to_string(bad),
                      origin + ":" + std::to_string(line));
  }
  std::string_view text(input);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);

  std::vector<std::vector<std::string>> records;
  std::vector<std::size_t> record_lines;
  std::size_t line = 1, i = 0;
  const std::size_t n = text.size();
  auto where = [&](std::size_t l) { return origin + ":" + std::to_string(l); };

  while (i < n) {
    // Skip blank lines between records.
    if (text[i] == '\n') {
      ++line;
      ++i;
      continue;
    }
    if (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') {
      ++line;
      i += 2;
      continue;
    }
    std::vector<std::string> fields;
    const std::size_t start_line = line;
    bool end_of_record = false;
    while (!end_of_record) {
      std::string field;
      if (i < n && text[i] == '"') {
        const std::size_t quote_line = line;
        ++i;
        bool closed = false;
        while (i < n) {
          char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (!closed)
          throw FormatError("unterminated quoted field (opened here)", where(quote_line));
        if (i < n && text[i] != ',' && text[i] != '\n' &&
            !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n'))
          throw FormatError(
              "unexpected text after a closing quote in field " + std::to_string(fields.size() + 1),
              where(line));
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' &&
               !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n')) {
          if (text[i] == '"')
            throw FormatError(
                "stray quote inside unquoted field " + std::to_string(fields.size() + 1),
                where(line), "quote the whole field and double inner quotes");
          field += text[i];
          ++i;
        }
      }
      fields.push_back(std::move(field));
      if (i >= n) {
        end_of_record = true;
      } else if (text[i] == ',') {
        ++i;
        if (i >= n) fields.emplace_back();
        end_of_record = i >= n;
      } else if (text[i] == '\n') {
        ++i;
        ++line;
        end_of_record = true;
      } else {
        i += 2;
        ++line;
        end_of_record = true;
      }  // CRLF
    }
    records.push_back(std::move(fields));
    record_lines.push_back(start_line);
  }

  if (records.empty()) throw FormatError("empty CSV file (no header)", origin);
  CsvTable table;
  table.header = std::move(records[0]);
  std::set<std::string> seen;
  for (std::size_t c = 0; c < table.header.size(); ++c) {
    const std::string h = trim(table.header[c]);
    // An unnamed column is legal: pandas writes its index that way (older JailbreakBench files).
    if (!h.empty() && !seen.insert(h).second)
      throw FormatError("duplicate column '" + h + "' in header", where(record_lines[0]));
  }
  for (std::size_t r = 1; r < records.size(); ++r) {
    if (records[r].size() != table.header.size())
      throw FormatError("row has " + std::to_string(records[r].size()) + " fields, header has " +
                            std::to_string(table.header.size()),
                        where(record_lines[r]));
    table.rows.push_back(std::move(records[r]));
    table.row_lines.push_back(record_lines[r]);
  }
  return table;
}

CsvTable read_csv(const std::string& path) { return parse_csv(io::read_file(path), path); }

}  // namespace safetune::safety
