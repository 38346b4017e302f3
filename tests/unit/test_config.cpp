// Config loading: every kind of bad input is reported with file:line:column and the key path.
#include <catch2/catch.hpp>

#include "safetune/config.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/recipes/two_stage.hpp"
#include "support.hpp"
#include "util/edit_distance.hpp"

using namespace safetune;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;

namespace {
// A small schema of its own, so these tests exercise the loader rather than any product config:
// run + model (the real sections) and a generation section with every field type and check.
struct GenerationSection : ConfigSection {
  std::int64_t max_new_tokens = 64;
  double temperature = 0.0;
  std::int64_t top_k = 0;
  double top_p = 1.0;
  double repetition_penalty = 1.0;
  std::int64_t seed = 0;
  void describe(ConfigVisitor& v) override {
    v.field("max_new_tokens", max_new_tokens,
            Field("Maximum tokens generated per prompt.").range(1, 1 << 20));
    v.field("temperature", temperature,
            Field("Sampling temperature; 0 decodes greedily.").range(0, 100));
    v.field("top_k", top_k, Field("Keep the k most likely tokens; 0 keeps all.").at_least(0));
    v.field("top_p", top_p, Field("Nucleus sampling mass; 1 keeps all.").range(0, 1));
    v.field("repetition_penalty", repetition_penalty,
            Field("Penalty on repeated tokens.").range(0.01, 100));
    v.field("seed", seed, Field("Sampling seed.").at_least(0));
  }
};

struct Config : ConfigSection {
  RunSection run;
  ModelSection model;
  GenerationSection generation;
  void describe(ConfigVisitor& v) override {
    v.section("run", run, Field("Run identity and output location."));
    v.section("model", model, Field("The base model."));
    v.section("generation", generation, Field("Decoding settings."));
  }
};

std::string load_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  Config cfg;
  try {
    config_load_string(cfg, yaml, "run.yaml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const UsageError& e) {
    return std::string("usage: ") + e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("config: a valid file loads with defaults for absent keys", "[config]") {
  Config cfg;
  config_load_string(cfg, "model:\n  path: m.gguf\n  dtype: bfloat16\ngeneration:\n  top_p: 0.9\n",
                     "run.yaml");
  CHECK(cfg.model.path == "m.gguf");
  CHECK(cfg.model.dtype == "bfloat16");
  CHECK(cfg.model.device == "cpu");
  CHECK(cfg.generation.top_p == Approx(0.9));
  CHECK(cfg.generation.max_new_tokens == 64);
}

TEST_CASE("config: unknown key names position, path and a suggestion", "[config]") {
  CHECK_THAT(load_error("model:\n  path: m\n  dtyp: float32\n"),
             Equals("run.yaml:3:3: model.dtyp: unknown key (did you mean 'model.dtype'?)"));
  CHECK_THAT(load_error("modle:\n  path: m\n"),
             Contains("run.yaml:1:1: modle: unknown key (did you mean 'model'?)"));
  CHECK_THAT(load_error("model:\n  path: m\n  zzzzzzzz: 1\n"),
             Contains("known keys here: path, dtype, device"));
}

TEST_CASE("config: wrong types are rejected with the expected type", "[config]") {
  CHECK_THAT(load_error("model: {path: m}\ngeneration:\n  max_new_tokens: lots\n"),
             Equals("run.yaml:3:19: generation.max_new_tokens: expected an integer, got 'lots'"));
  CHECK_THAT(load_error("model: {path: m}\ngeneration:\n  top_p: [1, 2]\n"),
             Contains("generation.top_p: expected a number, got a list"));
  CHECK_THAT(load_error("model: m\n"),
             Contains("run.yaml:1:8: model: expected a mapping, got a scalar"));
  CHECK_THAT(load_error("model: {path: m}\ngeneration:\n  max_new_tokens: 1.5\n"),
             Contains("expected an integer, got '1.5'"));
}

TEST_CASE("config: out-of-range values and bad choices", "[config]") {
  CHECK_THAT(
      load_error("model: {path: m}\ngeneration:\n  top_p: 1.5\n"),
      Equals("run.yaml:3:10: generation.top_p: value 1.5 is out of range: must be in [0, 1]"));
  CHECK_THAT(load_error("model: {path: m}\nrun:\n  seed: -3\n"),
             Contains("run.seed: value -3 is out of range: must be >= 0"));
  CHECK_THAT(load_error("model: {path: m, dtype: bfloat61}\n"),
             Contains("model.dtype: expected one of float32, bfloat16, float16; got 'bfloat61' "
                      "(did you mean 'bfloat16'?)"));
  CHECK_THAT(load_error("model: {path: m, device: gpu}\n"),
             Contains("model.device: expected cpu, cuda or cuda:N; got 'gpu'"));
}

TEST_CASE("config: missing required key and empty values", "[config]") {
  CHECK_THAT(load_error("run: {name: x}\n"), Contains("model.path: missing required key"));
  CHECK_THAT(load_error("model:\n  path:\n"),
             Contains("run.yaml:2:3: model.path: has no value (required)"));
}

TEST_CASE("config: malformed YAML reports the parser position", "[config]") {
  CHECK_THAT(load_error("model:\n  path: [unclosed\n"), Contains("run.yaml:"));
  CHECK_THAT(load_error("model:\n  path: [unclosed\n"), Contains("malformed YAML"));
  CHECK_THAT(load_error("- a\n- b\n"), Contains("top level must be a mapping"));
}

TEST_CASE("config: missing file", "[config]") {
  Config cfg;
  CHECK_THROWS_WITH(config_load(cfg, "/nonexistent/run.yaml"),
                    Contains("/nonexistent/run.yaml: config file not found"));
}

TEST_CASE("config: key=value overrides apply and are validated", "[config]") {
  Config cfg;
  config_load_string(cfg, "model: {path: m}\n", "run.yaml",
                     {"generation.top_k=40", "model.dtype=float16", "run.name=my run"});
  CHECK(cfg.generation.top_k == 40);
  CHECK(cfg.model.dtype == "float16");
  CHECK(cfg.run.name == "my run");

  CHECK_THAT(
      load_error("model: {path: m}\n", {"generation.top_k=many"}),
      Equals(
          "override 'generation.top_k=many': generation.top_k: expected an integer, got 'many'"));
  CHECK_THAT(
      load_error("model: {path: m}\n", {"model.dtpe=float16"}),
      Contains(
          "override 'model.dtpe=float16': model.dtpe: unknown key (did you mean 'model.dtype'?)"));
  CHECK_THAT(load_error("model: {path: m}\n", {"generation.top_p"}),
             Equals("usage: override: bad override 'generation.top_p': expected key.path=value"));
  CHECK_THAT(load_error("model: {path: m}\n", {"=3"}), Contains("bad override '=3'"));
  CHECK_THAT(load_error("model: {path: m}\n", {"a..b=3"}), Contains("is not a dotted key path"));
  CHECK_THAT(load_error("model: {path: m}\n", {"model.path=[x"}),
             Contains("value is not valid YAML"));
}

TEST_CASE("config: dump round-trips through the loader", "[config]") {
  Config a;
  config_load_string(
      a, "model: {path: /m/x.gguf, dtype: float16}\ngeneration: {temperature: 0.7}\n", "a.yaml");
  std::string dumped = config_dump(a);
  Config b;
  config_load_string(b, dumped, "dumped.yaml");
  CHECK(config_dump(b) == dumped);
  CHECK(b.generation.temperature == Approx(0.7));
  CHECK_THAT(dumped, Contains("dtype: float16"));
}

TEST_CASE("config: docs/config.md is generated from the schema", "[config]") {
  recipes::TwoStageConfig proto;
  std::string expected = config_reference_markdown(proto, "Configuration reference");
  std::string actual = io::read_file(test::source_dir() / "docs" / "config.md");
  // On drift, regenerate with: build/bin/safetune config reference > docs/config.md
  CHECK(actual == expected);
}

TEST_CASE("config: edit distance", "[config]") {
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(edit_distance("dtype", "dtype") == 0);
}
