// The release registry (one JSON file, rewritten atomically, never deleting artifacts) and the
// content hashes that tie a release to the exact adapter bytes it was assessed with.
#include "safetune/safety/registry.hpp"

#include <algorithm>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/assessment.hpp"
#include "safetune/safety/gates.hpp"

namespace safetune::safety {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;

using io::Sha256;

const char* kFormat = "safetune-release-registry";

json metrics_json(const std::map<std::string, double>& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}

// A relative stored path never contains "..": stored_path() writes one only for files below the
// registry, so such a path was edited in, and following it would hash (and trust) files anywhere.
bool escapes(const std::string& stored) {
  const fs::path p(stored);
  if (p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return true;
  return false;
}

}  // namespace

std::string sha256_tree(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    Sha256 h;
    h.update("file\0", 5);
    h.update_file(path);
    return h.hex();
  }
  if (!fs::is_directory(path, ec)) throw IoError("no such file or directory", path.string());
  std::vector<std::pair<std::string, fs::path>> files;
  for (auto it = fs::recursive_directory_iterator(path, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file())
      files.emplace_back(fs::relative(it->path(), path).generic_string(), it->path());
  if (ec) throw IoError("cannot list directory: " + ec.message(), path.string());
  std::sort(files.begin(), files.end());
  Sha256 h;
  for (const auto& [rel, full] : files) {
    const std::string size = std::to_string(fs::file_size(full));
    h.update(rel);
    h.update("\0", 1);
    h.update(size);
    h.update("\0", 1);
    h.update_file(full);
  }
  return h.hex();
}

const char* to_string(ReleaseStatus s) { return s == ReleaseStatus::passed ? "passed" : "failed"; }

std::string ReleaseRegistry::to_json() const {
  json j;
  j["format"] = kFormat;
  j["version"] = 1;
  j["current"] = current_.empty() ? json(nullptr) : json(current_);
  j["releases"] = json::array();
  for (const auto& r : releases_) {
    json x = {{"id", r.id},
              {"created", r.created},
              {"status", to_string(r.status)},
              {"reasons", r.reasons},
              {"summary", metrics_json(r.summary)},
              {"suite_sha256", r.suite_sha256},
              {"model_identity", r.model_identity}};
    if (!r.assessment.empty()) {
      x["assessment"] = r.assessment;
      x["assessment_sha256"] = r.assessment_sha256;
    }
    x["adapters"] = json::array();
    for (const auto& a : r.adapters)
      x["adapters"].push_back({{"path", a.path}, {"sha256", a.sha256}});
    j["releases"].push_back(std::move(x));
  }
  j["history"] = json::array();
  for (const auto& h : history_)
    j["history"].push_back({{"time", h.time},
                            {"event", h.event},
                            {"release", h.release},
                            {"detail", h.detail},
                            {"metrics", metrics_json(h.metrics)}});
  return j.dump(2) + "\n";
}

ReleaseRegistry ReleaseRegistry::open(const fs::path& path) {
  ReleaseRegistry reg;
  // Through a symlink, the registry is the file it points to: relative release paths resolve
  // beside that file, and writes update it (the link stays a link).
  reg.path_ = io::final_target(path);
  std::error_code ec;
  if (!fs::exists(reg.path_, ec)) return reg;
  const std::string text = io::read_file(reg.path_);
  const std::string where = path.string();
  auto fail = [&](const std::string& what) -> void {
    throw FormatError("damaged release registry: " + what, where,
                      "fix or restore the file by hand; safetune will not overwrite it");
  };
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object() || j.value("format", json()) != kFormat)
    fail("format is not " + std::string(kFormat));
  if (j.value("version", json()) != 1) fail("unsupported version");
  auto str = [&](const json& o, const char* key, const std::string& at) -> std::string {
    if (!o.is_object() || !o.contains(key) || !o[key].is_string())
      fail(at + "." + key + " must be a string");
    return o[key].get<std::string>();
  };
  auto metrics = [&](const json& o, const std::string& at) {
    std::map<std::string, double> m;
    if (!o.is_object()) fail(at + " must be an object");
    for (auto it = o.begin(); it != o.end(); ++it) {
      if (!it.value().is_number()) fail(at + "." + it.key() + " must be a number");
      m[it.key()] = it.value().get<double>();
    }
    return m;
  };
  if (!j.contains("releases") || !j["releases"].is_array()) fail("releases must be an array");
  for (std::size_t i = 0; i < j["releases"].size(); ++i) {
    const json& x = j["releases"][i];
    const std::string at = "releases[" + std::to_string(i) + "]";
    Release r;
    r.id = str(x, "id", at);
    if (r.id.empty()) fail(at + ".id is empty");
    if (reg.find(r.id)) fail("duplicate release id '" + r.id + "'");
    r.created = str(x, "created", at);
    const std::string status = str(x, "status", at);
    if (status == "passed") r.status = ReleaseStatus::passed;
    else if (status == "failed") r.status = ReleaseStatus::failed;
    else fail(at + ".status must be passed or failed");
    if (!x.contains("reasons") || !x["reasons"].is_array()) fail(at + ".reasons must be an array");
    for (const auto& s : x["reasons"]) {
      if (!s.is_string()) fail(at + ".reasons must hold strings");
      r.reasons.push_back(s.get<std::string>());
    }
    if (!x.contains("summary")) fail(at + ".summary is missing");
    r.summary = metrics(x["summary"], at + ".summary");
    r.suite_sha256 = str(x, "suite_sha256", at);
    r.model_identity = str(x, "model_identity", at);
    if (x.contains("assessment")) {
      r.assessment = str(x, "assessment", at);
      r.assessment_sha256 = str(x, "assessment_sha256", at);
      if (r.assessment_sha256.size() != 64)
        fail(at + ".assessment_sha256 is not a SHA-256 hex digest");
      if (escapes(r.assessment))
        fail(at + ".assessment '" + r.assessment +
             "' climbs out of the registry's folder with '..'");
    }
    if (!x.contains("adapters") || !x["adapters"].is_array())
      fail(at + ".adapters must be an array");
    for (std::size_t k = 0; k < x["adapters"].size(); ++k) {
      const std::string aat = at + ".adapters[" + std::to_string(k) + "]";
      ReleaseAdapter a{str(x["adapters"][k], "path", aat), str(x["adapters"][k], "sha256", aat)};
      if (a.sha256.size() != 64) fail(aat + ".sha256 is not a SHA-256 hex digest");
      if (escapes(a.path))
        fail(aat + ".path '" + a.path + "' climbs out of the registry's folder with '..'");
      r.adapters.push_back(std::move(a));
    }
    reg.releases_.push_back(std::move(r));
  }
  if (!j.contains("current")) fail("current is missing");
  if (!j["current"].is_null()) {
    if (!j["current"].is_string()) fail("current must be a release id or null");
    reg.current_ = j["current"].get<std::string>();
    const Release* cur = reg.find(reg.current_);
    if (!cur) fail("current names unknown release '" + reg.current_ + "'");
    if (cur->status != ReleaseStatus::passed)
      fail("current release '" + reg.current_ + "' is not a passed release");
  }
  if (!j.contains("history") || !j["history"].is_array()) fail("history must be an array");
  for (std::size_t i = 0; i < j["history"].size(); ++i) {
    const json& x = j["history"][i];
    const std::string at = "history[" + std::to_string(i) + "]";
    HistoryEntry h{
        str(x, "time", at), str(x, "event", at), str(x, "release", at), str(x, "detail", at), {}};
    if (!x.contains("metrics")) fail(at + ".metrics is missing");
    h.metrics = metrics(x["metrics"], at + ".metrics");
    reg.history_.push_back(std::move(h));
  }
  reg.on_disk_ = text;
  reg.existed_ = true;
  return reg;
}

const Release* ReleaseRegistry::find(const std::string& id) const {
  for (const auto& r : releases_)
    if (r.id == id) return &r;
  return nullptr;
}

const Release* ReleaseRegistry::current() const {
  return current_.empty() ? nullptr : find(current_);
}

std::string ReleaseRegistry::status_of(const std::string& id) const {
  const Release* r = find(id);
  if (!r) throw SafetyError("unknown release '" + id + "'", path_.string());
  if (id == current_) return "current";
  return to_string(r->status);
}

fs::path ReleaseRegistry::resolve(const std::string& stored) const {
  fs::path p(stored);
  return p.is_absolute() ? p : path_.parent_path() / p;
}

// Relative to the registry when the file lives below it, so the tree can be moved as a whole.
std::string ReleaseRegistry::stored_path(const fs::path& p) const {
  fs::path abs = p.is_absolute() ? p : fs::absolute(p);
  fs::path base = fs::absolute(path_).parent_path();
  fs::path rel = abs.lexically_normal().lexically_relative(base.lexically_normal());
  return (!rel.empty() && *rel.begin() != "..") ? rel.generic_string()
                                                : abs.lexically_normal().string();
}

void ReleaseRegistry::save() {
  // Someone else changed (or damaged) the file since we read it: refuse rather than clobber it.
  std::error_code ec;
  const bool exists = fs::exists(path_, ec);
  if (exists != existed_ || (exists && io::read_file(path_) != on_disk_))
    throw SafetyError("release registry changed on disk since it was opened; nothing written",
                      path_.string(), "re-open the registry and retry");
  const std::string text = to_json();
  io::atomic_write(path_, text);
  on_disk_ = text;
  existed_ = true;
}

template <class Fn>
void ReleaseRegistry::transact(Fn&& fn) {
  ReleaseRegistry next = *this;
  fn(next);
  next.save();
  *this = std::move(next);
}

const Release& ReleaseRegistry::add(const std::string& id,
                                    const std::vector<fs::path>& adapter_dirs,
                                    const Assessment& assessment, const GateVerdict& verdict,
                                    const fs::path& assessment_file) {
  if (id.empty()) throw SafetyError("release id is empty", path_.string());
  if (find(id))
    throw SafetyError("release '" + id + "' already exists", path_.string(),
                      "release ids are never reused");
  Release r;
  r.id = id;
  r.created = utc_now_iso8601();
  std::error_code ec;
  for (const auto& d : adapter_dirs) {
    if (!fs::exists(d, ec)) throw SafetyError("adapter not found", d.string());
    r.adapters.push_back({stored_path(d), sha256_tree(d)});
  }
  if (!assessment_file.empty()) {
    if (!fs::exists(assessment_file, ec))
      throw SafetyError("assessment file not found", assessment_file.string());
    r.assessment = stored_path(assessment_file);
    r.assessment_sha256 = sha256_file(assessment_file);
  }
  r.status = verdict.passed ? ReleaseStatus::passed : ReleaseStatus::failed;
  r.reasons = verdict.reasons;
  r.summary = {{"refusal_rate", assessment.refusal.overall.value()},
               {"refusal_n", double(assessment.refusal.overall.n)},
               {"benign_compliance", assessment.benign_compliance.overall.value()},
               {"benign_n", double(assessment.benign_compliance.overall.n)},
               {"discrimination_accuracy", assessment.discrimination.overall.value()},
               {"discrimination_n", double(assessment.discrimination.overall.n)}};
  r.suite_sha256 = assessment.suite_sha256;
  r.model_identity = assessment.model_identity;
  transact([&](ReleaseRegistry& n) {
    n.releases_.push_back(r);
    n.history_.push_back({utc_now_iso8601(), "register", id,
                          verdict.passed ? "passed gates" : "failed gates", r.summary});
  });
  return *find(id);
}

std::vector<std::string> ReleaseRegistry::verify(const std::string& id) const {
  const Release* r = find(id);
  if (!r) throw SafetyError("unknown release '" + id + "'", path_.string());
  std::vector<std::string> problems;
  for (const auto& a : r->adapters) {
    try {
      std::string h = sha256_tree(resolve(a.path));
      if (h != a.sha256)
        problems.push_back(a.path + ": content changed (sha256 " + h.substr(0, 16) +
                           ", registered " + a.sha256.substr(0, 16) + ")");
    } catch (const IoError& e) {
      problems.push_back(a.path + ": " + e.what_only());
    }
  }
  if (!r->assessment.empty()) {
    try {
      if (sha256_file(resolve(r->assessment)) != r->assessment_sha256)
        problems.push_back(r->assessment + ": assessment changed since registration");
    } catch (const IoError& e) {
      problems.push_back(r->assessment + ": " + e.what_only());
    }
  }
  return problems;
}

void ReleaseRegistry::promote(const std::string& id) {
  const Release* r = find(id);
  if (!r) throw SafetyError("unknown release '" + id + "'", path_.string());
  if (r->status != ReleaseStatus::passed) {
    std::string why;
    for (const auto& s : r->reasons) why += (why.empty() ? "" : "; ") + s;
    throw SafetyError("release '" + id + "' failed its safety gates and is never promoted" +
                          (why.empty() ? "" : ": " + why),
                      path_.string());
  }
  if (auto problems = verify(id); !problems.empty())
    throw SafetyError(
        "release '" + id + "' artifacts do not match the registry: " + problems.front(),
        path_.string());
  const std::string previous = current_;
  transact([&](ReleaseRegistry& n) {
    n.current_ = id;
    n.history_.push_back({utc_now_iso8601(),
                          "promote",
                          id,
                          previous.empty() ? "first release" : "replaces " + previous,
                          {}});
  });
}

std::string ReleaseRegistry::rollback(const std::string& reason) {
  if (current_.empty()) throw SafetyError("no current release to roll back", path_.string());
  auto cur = std::find_if(releases_.begin(), releases_.end(),
                          [&](const Release& r) { return r.id == current_; });
  std::string target;
  std::vector<std::string> skipped;
  for (auto it = std::make_reverse_iterator(cur); it != releases_.rend(); ++it) {
    if (it->status != ReleaseStatus::passed) continue;
    if (auto problems = verify(it->id); !problems.empty()) {
      skipped.push_back(it->id + " (" + problems.front() + ")");
      continue;
    }
    target = it->id;
    break;
  }
  if (target.empty()) {
    std::string s;
    for (const auto& x : skipped) s += "; skipped " + x;
    throw SafetyError("no earlier release passed its gates; nothing to roll back to" + s,
                      path_.string());
  }
  const std::string from = current_;
  transact([&](ReleaseRegistry& n) {
    for (auto& r : n.releases_)
      if (r.id == from) {
        r.status = ReleaseStatus::failed;
        r.reasons.push_back("rolled back: " + reason);
      }
    n.current_ = target;
    n.history_.push_back(
        {utc_now_iso8601(), "rollback", target, "from " + from + ": " + reason, {}});
  });
  return target;
}

void ReleaseRegistry::mark_failed(const std::string& id, const std::string& reason) {
  if (!find(id)) throw SafetyError("unknown release '" + id + "'", path_.string());
  if (id == current_)
    throw SafetyError("release '" + id + "' is current; use rollback to retire it", path_.string());
  transact([&](ReleaseRegistry& n) {
    for (auto& r : n.releases_)
      if (r.id == id) {
        r.status = ReleaseStatus::failed;
        r.reasons.push_back(reason);
      }
    n.history_.push_back({utc_now_iso8601(), "mark_failed", id, reason, {}});
  });
}

void ReleaseRegistry::append_history(HistoryEntry entry) {
  if (entry.time.empty()) entry.time = utc_now_iso8601();
  transact([&](ReleaseRegistry& n) { n.history_.push_back(std::move(entry)); });
}

}  // namespace safetune::safety
