// Probe suites named by a spec: several files of the public layouts joined into one suite, each
// with its format and (for single-kind files) the kind of prompts it holds.
#include <set>

#include "safetune/config.hpp"
#include "safetune/error.hpp"
#include "safetune/safety/benchmarks.hpp"

namespace safetune::safety {
namespace {

namespace fs = std::filesystem;

const std::set<std::string> kFormats = {"safetune",       "advbench",  "xstest",
                                        "jailbreakbench", "harmbench", "chisafetybench"};

ProbeSuite load_part(std::string part, const std::string& default_format,
                     std::optional<ProbeKind> default_kind) {
  std::string format;
  std::optional<ProbeKind> kind;
  if (auto c = part.find(':'); c != std::string::npos && kFormats.count(part.substr(0, c))) {
    format = part.substr(0, c);
    part.erase(0, c + 1);
    if (auto k = part.find(':'); k != std::string::npos) {
      const std::string word = part.substr(0, k);
      if (word == "harmful" || word == "benign") {
        kind = word == "harmful" ? ProbeKind::harmful : ProbeKind::benign;
        part.erase(0, k + 1);
      }
    }
  }
  if (part.empty())
    throw UsageError("a suite part names no file", format.empty() ? "suite" : format + ":");
  const fs::path path(expand_path(part));
  if (format.empty()) {
    if (fs::is_directory(path) || path.extension() == ".jsonl") format = "safetune";
    else if (default_format != "auto" && !default_format.empty()) format = default_format;
    else
      throw UsageError(
          "cannot tell the layout of '" + part + "'", "suite",
          "name it: advbench:PATH, xstest:PATH, jailbreakbench[:benign]:PATH, harmbench:PATH or "
          "chisafetybench:PATH (or pass --format)");
  }
  if (!kFormats.count(format)) throw UsageError("unknown suite format '" + format + "'", "suite");
  if (!kind && default_kind && format != "safetune" && format != "xstest") kind = default_kind;
  if (kind && (format == "safetune" || format == "xstest"))
    throw UsageError(format + " files say each probe's kind themselves; drop the kind", part);
  if (kind == ProbeKind::discrimination)
    throw UsageError("a file's kind is harmful or benign", part);
  if (format == "safetune")
    return fs::is_directory(path) ? load_bundled_suite(path) : load_probe_suite(path);
  if (format == "xstest") return load_xstest(path);
  if (format == "jailbreakbench")
    return load_jailbreakbench(path, kind.value_or(ProbeKind::harmful));
  ProbeSuite s = format == "advbench"    ? load_advbench(path)
                 : format == "harmbench" ? load_harmbench(path)
                                         : load_chisafetybench(path);
  if (kind == ProbeKind::benign)
    for (auto& p : s.probes) p.kind = ProbeKind::benign;
  return s;
}

}  // namespace

ProbeSuite load_suite_spec(const std::string& spec, const std::string& default_format,
                           std::optional<ProbeKind> default_kind) {
  std::vector<std::string> parts;
  for (std::size_t b = 0;;) {
    std::size_t e = spec.find(',', b);
    parts.push_back(spec.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  ProbeSuite out;
  std::set<std::string> ids;
  for (const auto& part : parts) {
    ProbeSuite s = load_part(part, default_format, default_kind);
    out.name += (out.name.empty() ? "" : "+") + s.name;
    for (auto& p : s.probes) {
      if (!ids.insert(p.id).second)
        throw DataError("duplicate probe id '" + p.id + "' across the suite's parts", p.origin,
                        "name each file once");
      out.probes.push_back(std::move(p));
    }
  }
  return out;
}

}  // namespace safetune::safety
