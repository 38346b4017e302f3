// Probe suite loading and validation: safetune JSONL plus the AdvBench, XSTest and
// JailbreakBench CSV layouts.
#include "safetune/safety/probes.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/registry.hpp"
#include "safety/csv.hpp"
#include "util/edit_distance.hpp"

namespace safetune::safety {
namespace {

using json = nlohmann::json;

const std::vector<std::string> kKnownFields = {"id",      "category", "kind", "prompt", "messages",
                                               "choices", "answer",   "lang", "source", "note"};

std::string suggest(const std::string& key) {
  std::string best;
  std::size_t best_d = 3;
  for (const auto& k : kKnownFields) {
    std::size_t d = edit_distance(key, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best.empty() ? "known fields: id, category, kind, prompt, messages, choices, answer, "
                        "lang, source, note"
                      : "did you mean '" + best + "'?";
}

std::string req_string(const json& j, const char* field, const std::string& where) {
  auto it = j.find(field);
  if (it == j.end()) throw DataError(std::string("missing field '") + field + "'", where);
  if (!it->is_string())
    throw DataError(std::string("field '") + field + "' must be a string", where);
  std::string s = it->get<std::string>();
  if (s.empty()) throw DataError(std::string("field '") + field + "' is empty", where);
  return s;
}

Probe parse_probe(const json& j, const std::string& where) {
  if (!j.is_object()) throw DataError("a probe must be a JSON object", where);
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find(kKnownFields.begin(), kKnownFields.end(), it.key()) == kKnownFields.end())
      throw DataError("unknown field '" + it.key() + "'", where, suggest(it.key()));
  Probe p;
  p.origin = where;
  p.id = req_string(j, "id", where);
  p.category = req_string(j, "category", where);
  const std::string kind = req_string(j, "kind", where);
  try {
    p.kind = probe_kind_from_string(kind);
  } catch (const SafetyError&) {
    throw DataError("field 'kind': unknown kind '" + kind + "'", where,
                    "expected harmful, benign or discrimination");
  }
  const bool has_prompt = j.contains("prompt"), has_messages = j.contains("messages");
  if (has_prompt == has_messages)
    throw DataError(has_prompt ? "both 'prompt' and 'messages' given"
                               : "missing field 'prompt' (or 'messages')",
                    where);
  if (has_prompt) {
    p.messages.push_back({"user", req_string(j, "prompt", where)});
  } else {
    const json& m = j["messages"];
    if (!m.is_array() || m.empty())
      throw DataError("field 'messages' must be a non-empty array", where);
    for (std::size_t i = 0; i < m.size(); ++i) {
      const std::string w = where + " messages[" + std::to_string(i) + "]";
      if (!m[i].is_object()) throw DataError("field 'messages': each message must be an object", w);
      for (auto it = m[i].begin(); it != m[i].end(); ++it)
        if (it.key() != "role" && it.key() != "content")
          throw DataError("field 'messages': unknown key '" + it.key() + "'", w,
                          "a message has role and content");
      Message msg{req_string(m[i], "role", w), req_string(m[i], "content", w)};
      if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
        throw DataError("field 'messages': unknown role '" + msg.role + "'", w,
                        "expected system, user or assistant");
      p.messages.push_back(std::move(msg));
    }
    if (p.messages.back().role != "user")
      throw DataError("field 'messages': the last message must be from the user", where);
  }
  if (j.contains("lang")) p.lang = req_string(j, "lang", where);
  if (j.contains("source")) {
    if (!j["source"].is_string()) throw DataError("field 'source' must be a string", where);
    p.source = j["source"].get<std::string>();
  }
  if (j.contains("note") && !j["note"].is_string())
    throw DataError("field 'note' must be a string", where);

  const bool has_choices = j.contains("choices"), has_answer = j.contains("answer");
  if (p.kind == ProbeKind::discrimination) {
    if (!has_choices)
      throw DataError("missing field 'choices' (discrimination probes need them)", where);
    if (!has_answer)
      throw DataError("missing field 'answer' (discrimination probes need it)", where);
    const json& c = j["choices"];
    if (!c.is_array() || c.size() < 2)
      throw DataError("field 'choices' must be an array of at least 2 strings", where);
    std::set<std::string> seen;
    for (const auto& e : c) {
      if (!e.is_string() || e.get<std::string>().empty())
        throw DataError("field 'choices' must hold non-empty strings", where);
      if (!seen.insert(e.get<std::string>()).second)
        throw DataError("field 'choices': duplicate choice '" + e.get<std::string>() + "'", where);
      p.choices.push_back(e.get<std::string>());
    }
    p.answer = req_string(j, "answer", where);
    if (!seen.count(p.answer))
      throw DataError("field 'answer': '" + p.answer + "' is not one of the choices", where);
  } else if (has_choices || has_answer) {
    throw DataError(std::string("field '") + (has_choices ? "choices" : "answer") +
                        "' is only for discrimination probes",
                    where);
  }
  return p;
}

void check_unique(const std::vector<Probe>& probes) {
  std::map<std::string, std::string> seen;
  for (const auto& p : probes) {
    auto [it, fresh] = seen.emplace(p.id, p.origin);
    if (!fresh)
      throw DataError("field 'id': duplicate id '" + p.id + "' (first at " + it->second + ")",
                      p.origin);
  }
}

std::string where_of(const std::string& origin, std::size_t line) {
  return origin + ":" + std::to_string(line);
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Message& m) {
  return os << m.role << ": " << m.content;
}

const char* to_string(ProbeKind kind) {
  switch (kind) {
    case ProbeKind::harmful: return "harmful";
    case ProbeKind::benign: return "benign";
    case ProbeKind::discrimination: return "discrimination";
  }
  return "?";
}

ProbeKind probe_kind_from_string(const std::string& s) {
  if (s == "harmful") return ProbeKind::harmful;
  if (s == "benign") return ProbeKind::benign;
  if (s == "discrimination") return ProbeKind::discrimination;
  throw SafetyError("unknown probe kind '" + s + "'", "",
                    "expected harmful, benign or discrimination");
}

const std::string& Probe::request() const {
  for (auto it = messages.rbegin(); it != messages.rend(); ++it)
    if (it->role == "user") return it->content;
  static const std::string empty;
  return empty;
}

std::string ProbeSuite::sha256() const {
  // Canonical: one compact JSON array per probe, fields in a fixed order; origin is left out.
  std::string canon;
  for (const auto& p : probes) {
    json m = json::array();
    for (const auto& msg : p.messages) m.push_back(json::array({msg.role, msg.content}));
    canon +=
        json::array({p.id, p.category, to_string(p.kind), m, p.choices, p.answer, p.lang}).dump();
    canon += '\n';
  }
  return sha256_hex(canon);
}

std::size_t ProbeSuite::count(ProbeKind kind) const {
  return static_cast<std::size_t>(
      std::count_if(probes.begin(), probes.end(), [&](const Probe& p) { return p.kind == kind; }));
}

std::vector<std::string> ProbeSuite::categories(ProbeKind kind) const {
  std::set<std::string> s;
  for (const auto& p : probes)
    if (p.kind == kind) s.insert(p.category);
  return {s.begin(), s.end()};
}

std::vector<std::string> ProbeSuite::languages() const {
  std::set<std::string> s;
  for (const auto& p : probes) s.insert(p.lang);
  return {s.begin(), s.end()};
}

const Probe* ProbeSuite::find(const std::string& id) const {
  for (const auto& p : probes)
    if (p.id == id) return &p;
  return nullptr;
}

ProbeSuite parse_probe_suite(const std::string& text, const std::string& origin) {
  ProbeSuite suite;
  suite.name = origin;
  std::size_t line = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string row = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (!row.empty() && row.back() == '\r') row.pop_back();
    if (line == 1 && row.rfind("\xEF\xBB\xBF", 0) == 0) row.erase(0, 3);
    if (row.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = where_of(origin, line);
    if (auto bad = utf8_invalid_offset(row); bad != std::string::npos)
      throw DataError("invalid UTF-8 at column " + std::to_string(bad + 1), where);
    json j;
    try {
      j = json::parse(row);
    } catch (const json::parse_error& e) {
      throw DataError(std::string("bad JSON: ") + e.what(), where);
    }
    suite.probes.push_back(parse_probe(j, where));
  }
  if (suite.probes.empty()) throw DataError("empty probe suite (no probes)", origin);
  check_unique(suite.probes);
  return suite;
}

ProbeSuite load_probe_suite(const std::filesystem::path& path) {
  ProbeSuite s = parse_probe_suite(io::read_file(path), path.string());
  s.name = path.stem().string();
  return s;
}

ProbeSuite load_probe_suites(const std::vector<std::filesystem::path>& paths,
                             const std::string& name) {
  if (paths.empty()) throw DataError("empty probe suite (no files)", name);
  ProbeSuite all;
  all.name = name;
  for (const auto& p : paths) {
    ProbeSuite s = load_probe_suite(p);
    for (auto& probe : s.probes) all.probes.push_back(std::move(probe));
  }
  check_unique(all.probes);
  return all;
}

ProbeSuite load_bundled_suite(const std::filesystem::path& dir) {
  return load_probe_suites(
      {dir / "harmful.jsonl", dir / "benign.jsonl", dir / "discrimination.jsonl"},
      "safetune-bundled");
}

namespace {

int need_column(const CsvTable& t, const std::string& name, const std::string& origin,
                const std::string& layout) {
  int c = t.column(name);
  if (c < 0) throw DataError("missing column '" + name + "' (" + layout + " layout)", origin);
  return c;
}

const std::string& cell(const CsvTable& t, std::size_t r, int c, const std::string& origin,
                        const std::string& col) {
  const std::string& v = t.rows[r][static_cast<std::size_t>(c)];
  if (v.find_first_not_of(" \t\r\n") == std::string::npos)
    throw DataError("empty '" + col + "'", where_of(origin, t.row_lines[r]));
  return v;
}

ProbeSuite finish(ProbeSuite s, const std::string& origin) {
  if (s.probes.empty()) throw DataError("empty probe suite (no rows)", origin);
  check_unique(s.probes);
  return s;
}

}  // namespace

ProbeSuite load_advbench(const std::filesystem::path& path) {
  const std::string origin = path.string();
  CsvTable t = parse_csv(io::read_file(path), origin);
  int goal = need_column(t, "goal", origin, "AdvBench");
  need_column(t, "target", origin, "AdvBench");
  ProbeSuite s;
  s.name = "advbench";
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    Probe p;
    p.id = "advbench-" + std::to_string(r + 1);
    p.category = "advbench";
    p.kind = ProbeKind::harmful;
    p.messages.push_back({"user", cell(t, r, goal, origin, "goal")});
    p.lang = "en";
    p.source = "AdvBench";
    p.origin = where_of(origin, t.row_lines[r]);
    s.probes.push_back(std::move(p));
  }
  return finish(std::move(s), origin);
}

ProbeSuite load_xstest(const std::filesystem::path& path) {
  const std::string origin = path.string();
  CsvTable t = parse_csv(io::read_file(path), origin);
  int prompt = need_column(t, "prompt", origin, "XSTest");
  int type = need_column(t, "type", origin, "XSTest");
  int label = need_column(t, "label", origin, "XSTest");
  int idc = t.column("id");
  ProbeSuite s;
  s.name = "xstest";
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    const std::string where = where_of(origin, t.row_lines[r]);
    Probe p;
    const std::string& lab = cell(t, r, label, origin, "label");
    if (lab == "safe") p.kind = ProbeKind::benign;
    else if (lab == "unsafe") p.kind = ProbeKind::harmful;
    else throw DataError("column 'label': expected safe or unsafe, got '" + lab + "'", where);
    p.id = "xstest-" + (idc >= 0 && !t.rows[r][static_cast<std::size_t>(idc)].empty()
                            ? t.rows[r][static_cast<std::size_t>(idc)]
                            : std::to_string(r + 1));
    p.category = cell(t, r, type, origin, "type");
    p.messages.push_back({"user", cell(t, r, prompt, origin, "prompt")});
    p.lang = "en";
    p.source = "XSTest";
    p.origin = where;
    s.probes.push_back(std::move(p));
  }
  return finish(std::move(s), origin);
}

ProbeSuite load_jailbreakbench(const std::filesystem::path& path, ProbeKind kind) {
  const std::string origin = path.string();
  CsvTable t = parse_csv(io::read_file(path), origin);
  int goal = need_column(t, "Goal", origin, "JailbreakBench");
  need_column(t, "Target", origin, "JailbreakBench");
  int behavior = need_column(t, "Behavior", origin, "JailbreakBench");
  int category = need_column(t, "Category", origin, "JailbreakBench");
  int source = need_column(t, "Source", origin, "JailbreakBench");
  ProbeSuite s;
  s.name = "jailbreakbench";
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    Probe p;
    if (kind == ProbeKind::discrimination)
      throw DataError("JailbreakBench rows are harmful or benign, not discrimination items",
                      origin);
    p.id = std::string(kind == ProbeKind::benign ? "jbb-benign-" : "jbb-") +
           cell(t, r, behavior, origin, "Behavior");
    p.category = cell(t, r, category, origin, "Category");
    p.kind = kind;
    p.messages.push_back({"user", cell(t, r, goal, origin, "Goal")});
    p.lang = "en";
    p.source = "JailbreakBench/" + t.rows[r][static_cast<std::size_t>(source)];
    p.origin = where_of(origin, t.row_lines[r]);
    s.probes.push_back(std::move(p));
  }
  return finish(std::move(s), origin);
}

std::vector<std::string> load_id_list(const std::filesystem::path& path) {
  const std::string text = io::read_file(path);
  std::vector<std::string> ids;
  std::set<std::string> seen;
  std::size_t line = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string row = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (auto hash = row.find('#'); hash != std::string::npos) row.erase(hash);
    auto b = row.find_first_not_of(" \t\r"), e = row.find_last_not_of(" \t\r");
    if (b == std::string::npos) continue;
    row = row.substr(b, e - b + 1);
    if (!seen.insert(row).second)
      throw DataError("duplicate id '" + row + "'", where_of(path.string(), line));
    ids.push_back(row);
  }
  if (ids.empty()) throw DataError("empty id list", path.string());
  return ids;
}

ProbeSuite select_probes(const ProbeSuite& suite, const std::vector<std::string>& ids,
                         const std::string& name) {
  ProbeSuite out;
  out.name = name;
  for (const auto& id : ids) {
    const Probe* p = suite.find(id);
    if (!p)
      throw DataError("unknown probe id '" + id + "' (not in suite " + suite.name + ")", name);
    out.probes.push_back(*p);
  }
  if (out.probes.empty()) throw DataError("empty probe selection", name);
  return out;
}

std::size_t utf8_invalid_offset(const std::string& s) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    unsigned c = b[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else return i;
    if (i + len > n) return i;
    for (std::size_t k = 1; k < len; ++k) {
      if ((b[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (b[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return i;
    i += len;
  }
  return std::string::npos;
}

std::size_t utf8_length(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

ProbeSuite first_per_kind(const ProbeSuite& suite, std::int64_t limit) {
  if (limit <= 0) return suite;
  ProbeSuite out;
  out.name = suite.name + "[first " + std::to_string(limit) + " per kind]";
  std::map<ProbeKind, std::int64_t> seen;
  for (const auto& p : suite.probes)
    if (seen[p.kind]++ < limit) out.probes.push_back(p);
  return out;
}

}  // namespace safetune::safety
