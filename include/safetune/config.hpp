// Typed configuration: structs describe their keys once (type, default, range, doc); the same
// description drives YAML loading with validation, `config show`, and docs/config.md.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace safetune {

// Constraints and documentation of one key. Built fluently: Field("doc").range(0, 1).required().
struct Field {
  explicit Field(std::string doc_) : doc(std::move(doc_)) {}
  Field& required() {
    is_required = true;
    return *this;
  }
  // A filesystem path: a leading "~/" and "$SAFETUNE_HOME" / "${SAFETUNE_HOME}" are expanded.
  Field& path() {
    is_path = true;
    return *this;
  }
  Field& range(double lo, double hi) {
    min = lo;
    max = hi;
    return *this;
  }
  Field& at_least(double lo) {
    min = lo;
    return *this;
  }
  Field& one_of(std::vector<std::string> c) {
    choices = std::move(c);
    return *this;
  }
  // Extra check on a string value: returns an error text, or nullopt when the value is fine.
  Field& check(std::function<std::optional<std::string>(const std::string&)> fn, std::string what) {
    checker = std::move(fn);
    check_doc = std::move(what);
    return *this;
  }
  std::string doc;
  bool is_required = false;
  bool is_path = false;
  std::optional<double> min, max;
  std::vector<std::string> choices;
  std::function<std::optional<std::string>(const std::string&)> checker;
  std::string check_doc;
};

class ConfigVisitor;

// A config section: a struct whose describe() names each key.
struct ConfigSection {
  virtual ~ConfigSection() = default;
  virtual void describe(ConfigVisitor& v) = 0;
};

// A YAML sequence of sections (e.g. several datasets).
struct SectionListBase {
  virtual ~SectionListBase() = default;
  virtual std::size_t size() const = 0;
  virtual void resize(std::size_t n) = 0;
  virtual ConfigSection& at(std::size_t i) = 0;
  virtual std::unique_ptr<ConfigSection> make_item() const = 0;
};
template <class T>
struct SectionList : SectionListBase {
  std::vector<T> items;
  std::size_t size() const override { return items.size(); }
  void resize(std::size_t n) override { items.resize(n); }
  ConfigSection& at(std::size_t i) override { return items.at(i); }
  std::unique_ptr<ConfigSection> make_item() const override { return std::make_unique<T>(); }
};

class ConfigVisitor {
 public:
  virtual ~ConfigVisitor() = default;
  virtual void field(std::string_view key, bool& value, const Field& f) = 0;
  virtual void field(std::string_view key, std::int64_t& value, const Field& f) = 0;
  virtual void field(std::string_view key, double& value, const Field& f) = 0;
  virtual void field(std::string_view key, std::string& value, const Field& f) = 0;
  virtual void field(std::string_view key, std::vector<std::string>& value, const Field& f) = 0;
  virtual void section(std::string_view key, ConfigSection& value, const Field& f) = 0;
  virtual void list(std::string_view key, SectionListBase& value, const Field& f) = 0;
};

// ---- the configs ----------------------------------------------------------------------------

struct RunSection : ConfigSection {
  std::string name = "safetune";
  std::string output_dir = "runs/safetune";
  std::int64_t seed = 0;
  void describe(ConfigVisitor& v) override;
};

struct ModelSection : ConfigSection {
  std::string path;
  std::string dtype = "float32";
  std::string device = "cpu";
  std::string tokenizer;      // default: the model's own
  std::string chat_template;  // default: what the model's metadata names
  bool activation_checkpointing = false;
  void describe(ConfigVisitor& v) override;
};

// ---- loading --------------------------------------------------------------------------------

// Parses `key.path=value` overrides (value is YAML: 3, 0.5, true, text, [a, b]).
struct Override {
  std::string key, value, text;
};
Override parse_override(const std::string& text);  // UsageError on bad syntax

// Loads and validates `path` with overrides applied, into `out`. ConfigError names
// file:line:column and the dotted key (or the override) on any problem.
void config_load(ConfigSection& out, const std::filesystem::path& path,
                 const std::vector<std::string>& overrides = {});
// Same, from YAML text; `origin` is the name used in messages.
void config_load_string(ConfigSection& out, const std::string& yaml, const std::string& origin,
                        const std::vector<std::string>& overrides = {});
// The fully resolved config as YAML, defaults included.
std::string config_dump(ConfigSection& cfg);
// Markdown reference of every key (type, default, constraints, description).
std::string config_reference_markdown(ConfigSection& prototype, const std::string& title);

// Expands "~/" (HOME) and $SAFETUNE_HOME / ${SAFETUNE_HOME} (default ~/.cache/safetune) in a path.
std::string expand_path(const std::string& path);

}  // namespace safetune
