// YAML loading, validation, overrides, dumping and the Markdown reference for ConfigSection.
#include "safetune/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "util/edit_distance.hpp"

namespace safetune {

std::string expand_path(const std::string& p) {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  const std::string home = env("HOME");
  std::string st_home = env("SAFETUNE_HOME");
  if (st_home.empty()) st_home = home + "/.cache/safetune";
  std::string out = p;
  for (const std::string key : {"${SAFETUNE_HOME}", "$SAFETUNE_HOME"}) {
    for (auto pos = out.find(key); pos != std::string::npos;
         pos = out.find(key, pos + st_home.size()))
      out.replace(pos, key.size(), st_home);
  }
  if (out == "~" || out.rfind("~/", 0) == 0) out = home + out.substr(1);
  return out;
}

Override parse_override(const std::string& text) {
  static const std::regex key_re("[A-Za-z_][A-Za-z0-9_]*(\\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*");
  auto eq = text.find('=');
  if (eq == std::string::npos)
    throw UsageError("bad override '" + text + "': expected key.path=value", "override");
  std::string key = text.substr(0, eq);
  if (!std::regex_match(key, key_re))
    throw UsageError(
        "bad override '" + text + "': '" + key + "' is not a dotted key path like model.dtype",
        "override");
  return Override{key, text.substr(eq + 1), text};
}

namespace {

const char* kind_name(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return "a scalar";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "nothing";
  }
}

std::string join_path(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
}

std::string fmt_number(double x) {
  std::ostringstream ss;
  ss << x;
  return ss.str();
}

// Collects the key names a section declares, in order.
class KeyLister : public ConfigVisitor {
 public:
  std::vector<std::string> keys;
  void field(std::string_view k, bool&, const Field&) override { keys.emplace_back(k); }
  void field(std::string_view k, std::int64_t&, const Field&) override { keys.emplace_back(k); }
  void field(std::string_view k, double&, const Field&) override { keys.emplace_back(k); }
  void field(std::string_view k, std::string&, const Field&) override { keys.emplace_back(k); }
  void field(std::string_view k, std::vector<std::string>&, const Field&) override {
    keys.emplace_back(k);
  }
  void section(std::string_view k, ConfigSection&, const Field&) override { keys.emplace_back(k); }
  void list(std::string_view k, SectionListBase&, const Field&) override { keys.emplace_back(k); }
};

// Applies schema descriptions to a YAML tree, reporting the first problem with its position.
class Loader : public ConfigVisitor {
 public:
  Loader(YAML::Node node, std::string prefix, const std::string& origin,
         const std::map<std::string, std::string>& overridden)
      : node_(std::move(node)),
        prefix_(std::move(prefix)),
        origin_(origin),
        overridden_(overridden) {}

  void field(std::string_view key, bool& value, const Field& f) override {
    if (auto n = take(key, f)) {
      std::string s = scalar(*n, key, "a boolean (true or false)");
      if (s == "true" || s == "True" || s == "TRUE") value = true;
      else if (s == "false" || s == "False" || s == "FALSE") value = false;
      else fail(*n, key, "expected a boolean (true or false), got '" + s + "'");
    }
  }
  void field(std::string_view key, std::int64_t& value, const Field& f) override {
    if (auto n = take(key, f)) {
      std::string s = scalar(*n, key, "an integer");
      std::int64_t x = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
      if (ec != std::errc() || p != s.data() + s.size())
        fail(*n, key, "expected an integer, got '" + s + "'");
      check_range(*n, key, static_cast<double>(x), f);
      value = x;
    }
  }
  void field(std::string_view key, double& value, const Field& f) override {
    if (auto n = take(key, f)) {
      std::string s = scalar(*n, key, "a number");
      double x = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
      if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(x))
        fail(*n, key, "expected a number, got '" + s + "'");
      check_range(*n, key, x, f);
      value = x;
    }
  }
  void field(std::string_view key, std::string& value, const Field& f) override {
    if (auto n = take(key, f)) {
      std::string s = scalar(*n, key, "a string");
      if (f.is_path) s = expand_path(s);
      check_string(*n, key, s, f);
      value = s;
    }
  }
  void field(std::string_view key, std::vector<std::string>& value, const Field& f) override {
    if (auto n = take(key, f)) {
      if (n->IsScalar()) {  // a single value is a one-element list
        std::string s = n->Scalar();
        check_string(*n, key, s, f);
        value = {s};
        return;
      }
      if (!n->IsSequence())
        fail(*n, key, std::string("expected a list of strings, got ") + kind_name(*n));
      std::vector<std::string> out;
      for (std::size_t i = 0; i < n->size(); ++i) {
        YAML::Node item = (*n)[i];
        std::string sub = std::string(key) + "." + std::to_string(i);
        if (!item.IsScalar())
          fail(item, sub, std::string("expected a string, got ") + kind_name(item));
        check_string(item, sub, item.Scalar(), f);
        out.push_back(item.Scalar());
      }
      value = std::move(out);
    }
  }
  void section(std::string_view key, ConfigSection& value, const Field& f) override {
    YAML::Node n;
    if (auto got = take(key, f)) {
      n = *got;
      if (!n.IsMap()) fail(n, key, std::string("expected a mapping, got ") + kind_name(n));
    } else {
      n = YAML::Node(YAML::NodeType::Map);
    }
    Loader sub(n, join_path(prefix_, key), origin_, overridden_);
    sub.run(value);
  }
  void list(std::string_view key, SectionListBase& value, const Field& f) override {
    auto n = take(key, f);
    if (!n) return;
    if (!n->IsSequence()) fail(*n, key, std::string("expected a list, got ") + kind_name(*n));
    value.resize(n->size());
    for (std::size_t i = 0; i < n->size(); ++i) {
      YAML::Node item = (*n)[i];
      std::string sub_key = std::string(key) + "." + std::to_string(i);
      if (!item.IsMap())
        fail(item, sub_key, std::string("expected a mapping, got ") + kind_name(item));
      Loader sub(item, join_path(prefix_, sub_key), origin_, overridden_);
      sub.run(value.at(i));
    }
  }

  void run(ConfigSection& s) {
    // Unknown keys first: a misspelt key is the likeliest cause of any later "missing" error.
    KeyLister lister;
    s.describe(lister);
    known_order_ = lister.keys;
    known_.insert(lister.keys.begin(), lister.keys.end());
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string k = it->first.as<std::string>();
      if (known_.count(k)) continue;
      std::string best;
      std::size_t best_d = 3;  // suggest only close names
      for (const auto& cand : known_order_) {
        std::size_t d = edit_distance(k, cand);
        if (d < best_d) best_d = d, best = cand;
      }
      std::string msg = "unknown key";
      if (!best.empty()) msg += " (did you mean '" + join_path(prefix_, best) + "'?)";
      else msg += "; known keys here: " + known_list();
      fail(it->first, k, msg);
    }
    s.describe(*this);
  }

 private:
  std::optional<YAML::Node> take(std::string_view key, const Field& f) {
    std::string k(key);
    const YAML::Node& view = node_;  // const access: never inserts the key
    YAML::Node n = view[k];
    if (!n.IsDefined() || n.IsNull()) {
      if (n.IsDefined() && n.IsNull())
        fail(key_node(k), key,
             "has no value" +
                 std::string(f.is_required ? " (required)" : "; remove it to use the default"));
      if (f.is_required) fail(node_, key, "missing required key: " + f.doc);
      return std::nullopt;
    }
    return n;
  }

  // The node of the key itself (its position is exact even when the value is empty).
  YAML::Node key_node(const std::string& k) const {
    for (auto it = node_.begin(); it != node_.end(); ++it)
      if (it->first.as<std::string>() == k) return it->first;
    return node_;
  }

  std::string scalar(const YAML::Node& n, std::string_view key, const std::string& expected) {
    if (!n.IsScalar()) fail(n, key, "expected " + expected + ", got " + kind_name(n));
    return n.Scalar();
  }

  void check_range(const YAML::Node& n, std::string_view key, double x, const Field& f) {
    if ((f.min && x < *f.min) || (f.max && x > *f.max)) {
      std::string range = f.min && f.max
                              ? "in [" + fmt_number(*f.min) + ", " + fmt_number(*f.max) + "]"
                          : f.min ? ">= " + fmt_number(*f.min)
                                  : "<= " + fmt_number(*f.max);
      fail(n, key, "value " + fmt_number(x) + " is out of range: must be " + range);
    }
  }

  void check_string(const YAML::Node& n, std::string_view key, const std::string& s,
                    const Field& f) {
    if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), s) == f.choices.end()) {
      std::string list;
      for (const auto& c : f.choices) list += (list.empty() ? "" : ", ") + c;
      std::string msg = "expected one of " + list + "; got '" + s + "'";
      for (const auto& c : f.choices)
        if (edit_distance(s, c) <= 2) {
          msg += " (did you mean '" + c + "'?)";
          break;
        }
      fail(n, key, msg);
    }
    if (f.checker)
      if (auto err = f.checker(s)) fail(n, key, *err);
    if (f.is_required && s.empty()) fail(n, key, "must not be empty");
  }

  std::string known_list() const {
    std::string s;
    for (const auto& k : known_order_) s += (s.empty() ? "" : ", ") + k;
    return s;
  }

  [[noreturn]] void fail(const YAML::Node& n, std::string_view key, const std::string& msg) {
    std::string path = join_path(prefix_, key);
    // Messages about keys set on the command line point at the override, not the file.
    for (const auto& [okey, otext] : overridden_) {
      if (path == okey || path.rfind(okey + ".", 0) == 0 || okey.rfind(path + ".", 0) == 0)
        throw ConfigError(path + ": " + msg, "override '" + otext + "'");
    }
    const YAML::Mark m = n.Mark();
    std::string where = origin_;
    if (!m.is_null())
      where += ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
    throw ConfigError(path + ": " + msg, where);
  }

  YAML::Node node_;
  std::string prefix_;
  const std::string& origin_;
  const std::map<std::string, std::string>& overridden_;
  std::set<std::string> known_;
  std::vector<std::string> known_order_;
};

void apply_override(YAML::Node& root, const Override& o) {
  YAML::Node value;
  try {
    value = YAML::Load(o.value);
  } catch (const YAML::Exception& e) {
    throw UsageError("bad override '" + o.text + "': value is not valid YAML: " + e.msg,
                     "override");
  }
  if (!value.IsDefined() || value.IsNull()) value = YAML::Node(std::string());
  std::vector<std::string> parts;
  std::stringstream ss(o.key);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
  // Walk with explicit node references; yaml-cpp's operator[] on a temporary would detach.
  std::vector<YAML::Node> chain{root};
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node cur = chain.back();
    const std::string& p = parts[i];
    bool is_index = std::all_of(p.begin(), p.end(), ::isdigit);
    if (is_index && cur.IsSequence()) {
      std::size_t idx = std::stoul(p);
      if (idx >= cur.size())
        throw ConfigError(o.key + ": index " + p + " is past the end of the list (" +
                              std::to_string(cur.size()) + " items)",
                          "override '" + o.text + "'");
      chain.push_back(cur[idx]);
      continue;
    }
    if (!cur.IsMap() && !cur.IsNull())
      throw ConfigError(o.key + ": '" + p + "' is not a mapping", "override '" + o.text + "'");
    YAML::Node next = cur[p];
    if (!next.IsDefined() || next.IsNull()) {
      cur[p] = YAML::Node(YAML::NodeType::Map);
      next = cur[p];
    }
    chain.push_back(next);
  }
  YAML::Node last = chain.back();
  const std::string& leaf = parts.back();
  if (last.IsSequence() && std::all_of(leaf.begin(), leaf.end(), ::isdigit)) {
    std::size_t idx = std::stoul(leaf);
    if (idx >= last.size())
      throw ConfigError(o.key + ": index " + leaf + " is past the end of the list",
                        "override '" + o.text + "'");
    last[idx] = value;
  } else {
    last[leaf] = value;
  }
}

// Builds a YAML tree of the current values, in schema order.
class Dumper : public ConfigVisitor {
 public:
  explicit Dumper(YAML::Emitter& out) : out_(out) {}
  void field(std::string_view key, bool& v, const Field&) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << v;
  }
  void field(std::string_view key, std::int64_t& v, const Field&) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << v;
  }
  void field(std::string_view key, double& v, const Field&) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << fmt_number(v);
  }
  void field(std::string_view key, std::string& v, const Field&) override {
    out_ << YAML::Key << std::string(key) << YAML::Value;
    if (v.empty()) out_ << YAML::DoubleQuoted << v;
    else out_ << v;
  }
  void field(std::string_view key, std::vector<std::string>& v, const Field&) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << YAML::Flow << v;
  }
  void section(std::string_view key, ConfigSection& s, const Field&) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << YAML::BeginMap;
    s.describe(*this);
    out_ << YAML::EndMap;
  }
  void list(std::string_view key, SectionListBase& l, const Field&) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << YAML::BeginSeq;
    for (std::size_t i = 0; i < l.size(); ++i) {
      out_ << YAML::BeginMap;
      l.at(i).describe(*this);
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
  }

 private:
  YAML::Emitter& out_;
};

std::string escape_md(std::string s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else out += c;
  }
  return out;
}

class Documenter : public ConfigVisitor {
 public:
  Documenter(std::ostringstream& out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}
  void field(std::string_view key, bool& v, const Field& f) override {
    row(key, "bool", v ? "true" : "false", f);
  }
  void field(std::string_view key, std::int64_t& v, const Field& f) override {
    row(key, "int", std::to_string(v), f);
  }
  void field(std::string_view key, double& v, const Field& f) override {
    row(key, "float", fmt_number(v), f);
  }
  void field(std::string_view key, std::string& v, const Field& f) override {
    row(key, "string", v.empty() ? "" : "`" + v + "`", f);
  }
  void field(std::string_view key, std::vector<std::string>& v, const Field& f) override {
    std::string d;
    for (const auto& s : v) d += (d.empty() ? "" : ", ") + s;
    row(key, "list of strings", "[" + d + "]", f);
  }
  void section(std::string_view key, ConfigSection& s, const Field& f) override {
    std::string path = join_path(prefix_, key);
    out_ << "\n## `" << path << "`\n\n" << f.doc << "\n\n";
    out_ << "| key | type | default | allowed | description |\n|---|---|---|---|---|\n";
    Documenter sub(out_, path);
    s.describe(sub);
    for (auto& deferred : sub.deferred_) deferred();
  }
  void list(std::string_view key, SectionListBase& l, const Field& f) override {
    std::string path = join_path(prefix_, key);
    row(key, "list of mappings", "[]", f);
    auto proto = std::shared_ptr<ConfigSection>(l.make_item());
    deferred_.push_back([this, path, proto, f] {
      out_ << "\n## `" << path << "[]`\n\n" << f.doc << " Each item:\n\n";
      out_ << "| key | type | default | allowed | description |\n|---|---|---|---|---|\n";
      Documenter sub(out_, path + "[]");
      proto->describe(sub);
      for (auto& d : sub.deferred_) d();
    });
  }
  std::vector<std::function<void()>> deferred_;

 private:
  void row(std::string_view key, const char* type, const std::string& def, const Field& f) {
    std::string allowed;
    if (!f.choices.empty())
      for (const auto& c : f.choices) allowed += (allowed.empty() ? "" : ", ") + ("`" + c + "`");
    else if (f.min && f.max) allowed = "[" + fmt_number(*f.min) + ", " + fmt_number(*f.max) + "]";
    else if (f.min) allowed = ">= " + fmt_number(*f.min);
    else if (f.max) allowed = "<= " + fmt_number(*f.max);
    if (!f.check_doc.empty()) allowed += (allowed.empty() ? "" : "; ") + f.check_doc;
    out_ << "| `" << join_path(prefix_, key) << "` | " << type << " | "
         << (f.is_required ? "**required**" : escape_md(def)) << " | " << escape_md(allowed)
         << " | " << escape_md(f.doc) << " |\n";
  }
  std::ostringstream& out_;
  std::string prefix_;
};

}  // namespace

void config_load_string(ConfigSection& out, const std::string& yaml, const std::string& origin,
                        const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    throw ConfigError("malformed YAML: " + e.msg, origin + ":" + std::to_string(e.mark.line + 1) +
                                                      ":" + std::to_string(e.mark.column + 1));
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap())
    throw ConfigError(
        std::string("top level must be a mapping of sections, got ") + kind_name(root),
        origin + ":1:1");
  std::map<std::string, std::string> overridden;
  for (const auto& text : overrides) {
    Override o = parse_override(text);
    apply_override(root, o);
    overridden[o.key] = o.text;
  }
  Loader loader(root, "", origin, overridden);
  loader.run(out);
}

void config_load(ConfigSection& out, const std::filesystem::path& path,
                 const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw ConfigError("config file not found", path.string(), "check the path");
  config_load_string(out, io::read_file(path), path.string(), overrides);
}

std::string config_dump(ConfigSection& cfg) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Dumper d(out);
  cfg.describe(d);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string config_reference_markdown(ConfigSection& prototype, const std::string& title) {
  std::ostringstream out;
  out << "# " << title << "\n\n"
      << "Generated by `safetune config reference` from the schema in lib/config/sections.cpp; a "
         "test\n"
         "fails when this file and the schema differ. Unknown keys are errors; any key can be set "
         "on\n"
         "the command line as `section.key=value`.\n";
  Documenter d(out, "");
  prototype.describe(d);
  for (auto& deferred : d.deferred_) deferred();
  return out.str();
}

}  // namespace safetune
