// The HarmBench (CSV) and CHiSafetyBench (JSON) layouts.
#include "safetune/safety/benchmarks.hpp"

#include <nlohmann/json.hpp>
#include <set>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safety/csv.hpp"

namespace safetune::safety {
namespace {

using json = nlohmann::json;

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// Every loader ends the same way: a non-empty suite with unique ids.
ProbeSuite checked(ProbeSuite s, const std::string& origin) {
  if (s.probes.empty()) throw DataError("empty probe suite (no rows)", origin);
  std::set<std::string> ids;
  for (const auto& p : s.probes)
    if (!ids.insert(p.id).second) throw DataError("duplicate probe id '" + p.id + "'", p.origin);
  return s;
}

}  // namespace

ProbeSuite load_harmbench(const std::filesystem::path& path) {
  const std::string origin = path.string();
  CsvTable t = parse_csv(io::read_file(path), origin);
  auto column = [&](const char* name) {
    int c = t.column(name);
    if (c < 0)
      throw DataError(std::string("missing column '") + name + "' (HarmBench layout)", origin);
    return static_cast<std::size_t>(c);
  };
  const std::size_t behavior = column("Behavior"), category = column("SemanticCategory"),
                    id = column("BehaviorID");
  const int context = t.column("ContextString");
  ProbeSuite s;
  s.name = "harmbench";
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    const std::string where = origin + ":" + std::to_string(t.row_lines[r]);
    for (auto [c, name] :
         {std::pair{behavior, "Behavior"}, {category, "SemanticCategory"}, {id, "BehaviorID"}})
      if (blank(row[c])) throw DataError(std::string("empty '") + name + "'", where);
    Probe p;
    p.id = "harmbench-" + row[id];
    p.category = row[category];
    p.kind = ProbeKind::harmful;
    std::string prompt = row[behavior];
    if (context >= 0 && !blank(row[static_cast<std::size_t>(context)]))
      prompt = row[static_cast<std::size_t>(context)] + "\n\n---\n\n" + prompt;
    p.messages.push_back({"user", prompt});
    p.lang = "en";
    p.source = "HarmBench";
    p.origin = where;
    s.probes.push_back(std::move(p));
  }
  return checked(std::move(s), origin);
}

ProbeSuite load_chisafetybench(const std::filesystem::path& path) {
  const std::string origin = path.string();
  const std::string text = io::read_file(path);
  if (auto bad = utf8_invalid_offset(text); bad != std::string::npos)
    throw DataError("invalid UTF-8 at byte " + std::to_string(bad), origin);
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array())
    throw DataError("expected a JSON array (CHiSafetyBench layout)", origin);
  auto str = [](const json& o, const char* field, const std::string& where) {
    if (!o.is_object()) throw DataError("expected a JSON object", where);
    auto it = o.find(field);
    if (it == o.end() || !it->is_string() || blank(it->get<std::string>()))
      throw DataError(std::string("missing or empty string field '") + field + "'", where);
    return it->get<std::string>();
  };
  // Multiple-choice items list their options on lines of their own ("\nA. ...\nB. ...").
  auto is_mcq = [](const std::string& q) {
    auto a = q.find("\nA"), b = q.find("\nB");
    return a != std::string::npos && b != std::string::npos && a < b;
  };
  ProbeSuite s;
  s.name = "chisafetybench";
  for (std::size_t i = 0; i < j.size(); ++i) {
    const json& item = j[i];
    const std::string where = origin + ": item " + std::to_string(i);
    const std::string area = str(item, "category", where);
    if (item.contains("infos")) {  // grouped risky questions
      if (!item["infos"].is_array()) throw DataError("'infos' must be an array", where);
      for (std::size_t k = 0; k < item["infos"].size(); ++k) {
        const json& q = item["infos"][k];
        const std::string w = where + ".infos." + std::to_string(k);
        const std::string question = str(q, "question", w);
        if (is_mcq(question))
          throw DataError(
              "multiple-choice item: CHiSafetyBench's mcq.json has no answer key in the file, so "
              "it "
              "cannot be scored",
              w, "load risky_questions_*.json instead");
        Probe p;
        p.id = "chisafety-" + std::to_string(i + 1) + "-" +
               (q.contains("id") && q["id"].is_number_integer()
                    ? std::to_string(q["id"].get<std::int64_t>())
                    : std::to_string(k + 1));
        p.category = str(q, "category", w);
        p.kind = ProbeKind::harmful;
        p.messages.push_back({"user", question});
        p.lang = "zh";
        p.source = "CHiSafetyBench/" + area;
        p.origin = w;
        s.probes.push_back(std::move(p));
      }
      continue;
    }
    // A dialogue ending in a risky question.
    Probe p;
    p.id = "chisafety-dialog-" + std::to_string(i + 1);
    p.category = item.contains("sub_category") ? str(item, "sub_category", where) : area;
    p.kind = ProbeKind::harmful;
    if (item.contains("history")) {
      if (!item["history"].is_array()) throw DataError("'history' must be an array", where);
      for (std::size_t k = 0; k < item["history"].size(); ++k) {
        const json& m = item["history"][k];
        const std::string w = where + ".history." + std::to_string(k);
        const std::string role = str(m, "role", w);
        if (role != "system" && role != "user" && role != "assistant")
          throw DataError("unknown role '" + role + "'", w, "expected system, user or assistant");
        p.messages.push_back({role, str(m, "content", w)});
      }
    }
    p.messages.push_back({"user", str(item, "input", where)});
    p.lang = "zh";
    p.source = "CHiSafetyBench/" + area;
    p.origin = where;
    s.probes.push_back(std::move(p));
  }
  return checked(std::move(s), origin);
}

}  // namespace safetune::safety
