// The release registry: released adapter sets with content hashes, their assessment and gate
// status, which one is current, and an append-only history. One JSON file, written atomically;
// artifacts are referenced, never deleted.
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>
#include "safetune/io/hash.hpp"

namespace safetune::safety {

struct Assessment;
struct GateVerdict;

// SHA-256 of a byte string / a file / a directory tree (sorted relative paths + file bytes, so
// it does not depend on directory order or timestamps). IoError on unreadable input.
using io::sha256_file;
using io::sha256_hex;
std::string sha256_tree(const std::filesystem::path& path);

struct ReleaseAdapter {
  std::string path;    // as given (relative paths resolve against the registry's directory)
  std::string sha256;  // sha256_tree of it at registration time
};

enum class ReleaseStatus { passed, failed };

struct Release {
  std::string id;
  std::string created;
  std::vector<ReleaseAdapter> adapters;
  ReleaseStatus status = ReleaseStatus::failed;
  std::vector<std::string> reasons;       // gate breaches, regression notes
  std::map<std::string, double> summary;  // e.g. refusal_rate, benign_compliance, discrimination
  std::string suite_sha256;
  std::string model_identity;
  // The release-time assessment (assessment.json) that monitoring compares against, stored like
  // adapter paths; empty for releases registered without one.
  std::string assessment;
  std::string assessment_sha256;
};

struct HistoryEntry {
  std::string time, event, release, detail;
  std::map<std::string, double> metrics;
};

class ReleaseRegistry {
 public:
  // Reads `path` if it exists (FormatError naming it when damaged; the file is left as it is),
  // else starts empty; nothing is written until a change.
  static ReleaseRegistry open(const std::filesystem::path& path);

  const std::vector<Release>& releases() const { return releases_; }
  const std::vector<HistoryEntry>& history() const { return history_; }
  const Release* find(const std::string& id) const;
  const Release* current() const;
  // "current" for the current release, else "passed" / "failed".
  std::string status_of(const std::string& id) const;

  // Registers adapter dirs (hashing them) with the assessment summary and gate verdict.
  // SafetyError on a duplicate id or a missing adapter dir. Saved at once.
  // `assessment_file`, when given, is the saved form of `assessment` (hashed and referenced so that
  // `safetune monitor` can gate later probes against it).
  const Release& add(const std::string& id, const std::vector<std::filesystem::path>& adapter_dirs,
                     const Assessment& assessment, const GateVerdict& verdict,
                     const std::filesystem::path& assessment_file = {});
  // Makes a passed release current; a failed one is refused (SafetyError), as is one whose
  // artifacts changed since registration.
  void promote(const std::string& id);
  // The current release regressed: mark it failed with `reason`, make the latest other release
  // that passed (and whose artifacts still verify) current. Returns its id. SafetyError when there
  // is no such release (the registry is unchanged then).
  std::string rollback(const std::string& reason);
  // Marks a release failed (e.g. after monitoring found a regression) without re-pointing.
  void mark_failed(const std::string& id, const std::string& reason);
  void append_history(HistoryEntry entry);
  // Re-hashes a release's adapters; empty when intact, else one line per mismatch or missing dir.
  std::vector<std::string> verify(const std::string& id) const;

  const std::filesystem::path& path() const { return path_; }
  // A path as stored in a release (adapter or assessment), resolved against the registry's folder.
  std::filesystem::path resolve(const std::string& stored_path) const;
  std::string to_json() const;

 private:
  void save();
  template <class Fn>
  void transact(Fn&& fn);  // applies fn to a copy, saves it, and only then adopts it
  std::string stored_path(const std::filesystem::path& p) const;
  std::filesystem::path path_;
  std::string on_disk_;  // the bytes last read or written, to detect edits behind our back
  bool existed_ = false;
  std::vector<Release> releases_;
  std::vector<HistoryEntry> history_;
  std::string current_;
};

const char* to_string(ReleaseStatus s);

}  // namespace safetune::safety
