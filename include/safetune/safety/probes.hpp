// Probe suites: the prompts a safety assessment asks, loaded from safetune JSONL or public layouts.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "safetune/safety/message.hpp"

namespace safetune::safety {

// harmful: the model should refuse; benign: it should comply (over-refusal checks);
// discrimination: a multiple-choice judgement scored by choice log-likelihood.
enum class ProbeKind { harmful, benign, discrimination };
const char* to_string(ProbeKind kind);
ProbeKind probe_kind_from_string(const std::string& s);  // SafetyError on anything else

struct Probe {
  std::string id;
  std::string category;
  ProbeKind kind = ProbeKind::harmful;
  std::vector<Message> messages;     // a bare "prompt" becomes one user message
  std::vector<std::string> choices;  // discrimination only
  std::string answer;                // discrimination only; one of choices
  std::string lang = "und";          // BCP 47-ish tag: "en", "zh", ...
  std::string source;                // free text: where the item came from
  std::string origin;                // "file:line" it was read from (for messages; not hashed)
  // The last user message: what a refusal scorer shows a judge as "the request".
  const std::string& request() const;
};

struct ProbeSuite {
  std::string name;
  std::vector<Probe> probes;
  // SHA-256 over a canonical serialisation of the probes (not of the file bytes), so the same
  // suite read from a different path or with different whitespace keeps its identity.
  std::string sha256() const;
  std::size_t count(ProbeKind kind) const;
  std::vector<std::string> categories(ProbeKind kind) const;  // sorted, unique
  std::vector<std::string> languages() const;                 // sorted, unique
  const Probe* find(const std::string& id) const;
};

// safetune JSONL, one probe per line:
//   {"id", "category", "kind": harmful|benign|discrimination, "prompt" | "messages",
//    "choices" + "answer" (discrimination), "lang", "source"}
// Validation errors (bad JSON or UTF-8, missing or unknown fields, unknown kind, duplicate ids,
// answer outside choices, empty suite) are DataError with where = "file:line" and the field.
ProbeSuite load_probe_suite(const std::filesystem::path& path);
ProbeSuite parse_probe_suite(const std::string& text, const std::string& origin);
// Several files as one suite (ids must be unique across them); name = `name`.
ProbeSuite load_probe_suites(const std::vector<std::filesystem::path>& paths,
                             const std::string& name);
// The three bundled files under `dir` (harmful.jsonl, benign.jsonl, discrimination.jsonl).
ProbeSuite load_bundled_suite(const std::filesystem::path& dir);

// Public layouts users bring (all English; category from the file where it has one):
// AdvBench harmful_behaviors.csv: columns goal,target -> harmful probes, category "advbench".
ProbeSuite load_advbench(const std::filesystem::path& path);
// XSTest: columns prompt, type, label (safe|unsafe) -> benign (safe) / harmful (unsafe),
// category = type. Extra columns (id, focus, note) are ignored.
ProbeSuite load_xstest(const std::filesystem::path& path);
// JailbreakBench behaviours: columns Goal, Target, Behavior, Category, Source (an Index column,
// named or not, is ignored) -> probes of `kind` (harmful-behaviors.csv; benign-behaviors.csv with
// ProbeKind::benign), category = Category, id = "jbb-" + Behavior.
ProbeSuite load_jailbreakbench(const std::filesystem::path& path,
                               ProbeKind kind = ProbeKind::harmful);

// A fixed id list (one per line, '#' comments) picking a subset, e.g. for the in-training guard.
std::vector<std::string> load_id_list(const std::filesystem::path& path);
ProbeSuite select_probes(const ProbeSuite& suite, const std::vector<std::string>& ids,
                         const std::string& name);
// The first `limit` probes of each kind (limit <= 0 keeps all); the name records the cut.
ProbeSuite first_per_kind(const ProbeSuite& suite, std::int64_t limit);

// UTF-8 well-formedness (no overlongs, surrogates or code points past U+10FFFF). Returns the byte
// offset of the first bad byte, or npos.
std::size_t utf8_invalid_offset(const std::string& s);
std::size_t utf8_length(const std::string& s);  // code points; call only on valid UTF-8

}  // namespace safetune::safety
