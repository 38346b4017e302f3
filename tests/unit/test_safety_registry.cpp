// Release registry: hashing, promote/rollback semantics, damaged files, atomic rewrites.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/assessment.hpp"
#include "safetune/safety/gates.hpp"
#include "safetune/safety/registry.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::safety;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

Assessment summary(std::int64_t refused, std::int64_t n) {
  Assessment a;
  a.suite_sha256 = std::string(64, 'a');
  a.model_identity = "m";
  a.refusal.overall = {refused, n};
  a.benign_compliance.overall = {9, 10};
  a.discrimination.overall = {8, 10};
  return a;
}

GateVerdict pass() { return GateVerdict{true, {}, {}}; }
GateVerdict fail(const std::string& why) { return GateVerdict{false, {why}, {}}; }

void make_adapter(const fs::path& dir, const std::string& content) {
  test::write_text(dir / "adapter_config.json", "{\"r\": 8}");
  test::write_text(dir / "adapter_model.safetensors", content);
}

}  // namespace

TEST_CASE("safety/SHA-256 of bytes, files and trees", "[safety]") {
  // FIPS 180-2 test vectors.
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  test::TempDir dir;
  test::write_text(dir / "f.txt", "abc");
  CHECK(sha256_file(dir / "f.txt") == sha256_hex("abc"));
  make_adapter(dir / "a", "weights-1");
  make_adapter(dir / "b", "weights-1");
  CHECK(sha256_tree(dir / "a") == sha256_tree(dir / "b"));  // same content, different place
  test::write_text(dir / "b" / "adapter_model.safetensors", "weights-2");
  CHECK(sha256_tree(dir / "a") != sha256_tree(dir / "b"));
  fs::rename(dir / "b" / "adapter_model.safetensors", dir / "b" / "renamed.safetensors");
  test::write_text(dir / "b" / "renamed.safetensors", "weights-1");
  CHECK(sha256_tree(dir / "a") != sha256_tree(dir / "b"));  // names count
  CHECK_THROWS_AS(sha256_tree(dir / "missing"), IoError);
}

TEST_CASE("safety/registry: register, promote, refuse failed releases, roll back", "[safety]") {
  test::TempDir dir;
  const fs::path reg_path = dir / "releases" / "registry.json";
  for (const char* r : {"r1", "r2", "r3", "r4"})
    make_adapter(dir / "releases" / r / "task", std::string("w-") + r);

  ReleaseRegistry reg = ReleaseRegistry::open(reg_path);
  CHECK(reg.releases().empty());
  CHECK_FALSE(fs::exists(reg_path));  // nothing written until a change
  reg.add("r1", {dir / "releases" / "r1" / "task"}, summary(95, 100), pass());
  reg.promote("r1");
  reg.add("r2", {dir / "releases" / "r2" / "task"}, summary(60, 100),
          fail("refusal rate fell 35 pp"));
  CHECK_THROWS_WITH(reg.promote("r2"),
                    Contains("failed its safety gates") && Contains("refusal rate fell 35 pp"));
  CHECK(reg.current()->id == "r1");
  reg.add("r3", {dir / "releases" / "r3" / "task"}, summary(96, 100), pass());
  reg.promote("r3");
  CHECK(reg.status_of("r3") == "current");
  CHECK(reg.status_of("r1") == "passed");
  CHECK(reg.status_of("r2") == "failed");
  CHECK_THROWS_WITH(reg.add("r3", {dir / "releases" / "r3" / "task"}, summary(1, 1), pass()),
                    Contains("already exists"));
  CHECK_THROWS_WITH(reg.add("r9", {dir / "nowhere"}, summary(1, 1), pass()),
                    Contains("adapter not found"));

  // Stored relative to the registry, hashed by content.
  const Release* r1 = reg.find("r1");
  REQUIRE(r1->adapters.size() == 1);
  CHECK(r1->adapters[0].path == "r1/task");
  CHECK(r1->adapters[0].sha256 == sha256_tree(dir / "releases" / "r1" / "task"));
  CHECK(r1->summary.at("refusal_rate") == Approx(0.95));

  // Monitoring found a regression on r3: roll back skips the failed r2 and lands on r1.
  CHECK(reg.rollback("refusal rate fell 12 pp in monitoring") == "r1");
  CHECK(reg.current()->id == "r1");
  CHECK(reg.status_of("r3") == "failed");
  CHECK_THAT(reg.find("r3")->reasons.back(), Contains("rolled back: refusal rate fell 12 pp"));
  // Nothing was deleted.
  for (const char* r : {"r1", "r2", "r3"})
    CHECK(fs::exists(dir / "releases" / r / "task" / "adapter_model.safetensors"));

  // Reopened from disk, everything is still there, history included.
  ReleaseRegistry again = ReleaseRegistry::open(reg_path);
  CHECK(again.current()->id == "r1");
  CHECK(again.releases().size() == 3);
  std::vector<std::string> events;
  for (const auto& h : again.history()) events.push_back(h.event);
  CHECK(events == std::vector<std::string>{"register", "promote", "register", "register", "promote",
                                           "rollback"});
  again.append_history({"", "monitor", "r1", "ok", {{"refusal_rate", 0.94}}});
  CHECK(ReleaseRegistry::open(reg_path).history().back().metrics.at("refusal_rate") ==
        Approx(0.94));

  // No earlier passing release: rollback refuses and changes nothing.
  const std::string before = io::read_file(reg_path);
  CHECK_THROWS_WITH(again.rollback("again"), Contains("no earlier release passed"));
  CHECK(io::read_file(reg_path) == before);
  CHECK(again.current()->id == "r1");
}

TEST_CASE("safety/registry: tampered artifacts are not promoted or rolled back to", "[safety]") {
  test::TempDir dir;
  for (const char* r : {"a", "b", "c"}) make_adapter(dir / r, std::string("w-") + r);
  ReleaseRegistry reg = ReleaseRegistry::open(dir / "registry.json");
  reg.add("a", {dir / "a"}, summary(9, 10), pass());
  reg.add("b", {dir / "b"}, summary(9, 10), pass());
  reg.add("c", {dir / "c"}, summary(9, 10), pass());
  reg.promote("a");
  reg.promote("c");
  CHECK(reg.verify("b").empty());
  test::write_text(dir / "b" / "adapter_model.safetensors", "swapped weights");
  CHECK_THAT(reg.verify("b").at(0), Contains("content changed"));
  CHECK_THROWS_WITH(reg.promote("b"), Contains("do not match the registry"));
  // Rollback from c skips the tampered b and lands on a.
  CHECK(reg.rollback("regression") == "a");
  fs::remove_all(dir / "a");
  CHECK_THAT(reg.verify("a").at(0), Contains("no such file"));
}

TEST_CASE("safety/registry: a damaged file is a clear error and is never overwritten", "[safety]") {
  test::TempDir dir;
  make_adapter(dir / "a", "w");
  const fs::path p = dir / "registry.json";
  auto expect_damaged = [&](const std::string& text, const std::string& what) {
    test::write_text(p, text);
    try {
      ReleaseRegistry::open(p);
      FAIL("opened a damaged registry: " << text);
    } catch (const FormatError& e) {
      CHECK_THAT(e.what(), Contains("registry.json") && Contains("damaged release registry") &&
                               Contains(what));
    }
    CHECK(io::read_file(p) == text);
  };
  expect_damaged("{\"format\": \"safetune-release-registry\", \"version\": 1, \"releases\": [",
                 "not valid JSON");
  expect_damaged("[]", "format");
  expect_damaged(
      R"({"format":"safetune-release-registry","version":1,"current":null,"releases":{},"history":[]})",
      "releases must be an array");
  expect_damaged(
      R"({"format":"safetune-release-registry","version":1,"current":"x","releases":[],"history":[]})",
      "unknown release 'x'");
  expect_damaged(
      R"({"format":"safetune-release-registry","version":1,"current":null,"releases":[{"id":"a","created":"t",
    "status":"maybe","reasons":[],"summary":{},"suite_sha256":"","model_identity":"","adapters":[]}],"history":[]})",
      "status must be passed or failed");

  // A relative adapter or assessment path climbing out with "..": never followed (it hashed /etc).
  const std::string sha(64, 'a');
  expect_damaged(
      R"({"format":"safetune-release-registry","version":1,"current":null,"releases":[{"id":"a","created":"t",
    "status":"passed","reasons":[],"summary":{},"suite_sha256":"","model_identity":"","adapters":[{"path":"../../../../etc","sha256":")" +
          sha + R"("}]}],"history":[]})",
      "releases[0].adapters[0].path '../../../../etc' climbs out of the registry's folder");
  expect_damaged(
      R"({"format":"safetune-release-registry","version":1,"current":null,"releases":[{"id":"a","created":"t",
    "status":"passed","reasons":[],"summary":{},"suite_sha256":"","model_identity":"","assessment":"x/../../a.json",
    "assessment_sha256":")" +
          sha + R"(","adapters":[]}],"history":[]})",
      "releases[0].assessment 'x/../../a.json' climbs out");

  // Edited by hand (damaged) after we opened it: our next write refuses instead of clobbering it.
  fs::remove(p);
  ReleaseRegistry reg = ReleaseRegistry::open(p);
  reg.add("a", {dir / "a"}, summary(9, 10), pass());
  test::write_text(p, "{ oops");
  CHECK_THROWS_WITH(reg.promote("a"), Contains("changed on disk"));
  CHECK(io::read_file(p) == "{ oops");
  CHECK(reg.current() == nullptr);  // in-memory state unchanged too
}

TEST_CASE("safety/registry: a rollback through a symlinked registry rolls back the real one",
          "[safety]") {
  test::TempDir dir;
  for (const char* r : {"r1", "r2"}) make_adapter(dir / "real" / r, std::string("w-") + r);
  const fs::path real = dir / "real" / "registry.json";
  {
    ReleaseRegistry reg = ReleaseRegistry::open(real);
    reg.add("r1", {dir / "real" / "r1"}, summary(9, 10), pass());
    reg.promote("r1");
    reg.add("r2", {dir / "real" / "r2"}, summary(9, 10), pass());
    reg.promote("r2");
  }
  fs::create_symlink(real, dir / "link.json");
  ReleaseRegistry via_link = ReleaseRegistry::open(dir / "link.json");
  CHECK(via_link.rollback("manual") == "r1");
  CHECK(fs::is_symlink(dir / "link.json"));                  // still a link
  CHECK(ReleaseRegistry::open(real).current()->id == "r1");  // the real registry rolled back
  CHECK(nlohmann::json::parse(io::read_file(real))["current"] == "r1");
}

TEST_CASE("safety/registry: a write interrupted before commit leaves the old registry valid",
          "[safety]") {
  test::TempDir dir;
  make_adapter(dir / "a", "w");
  const fs::path p = dir / "registry.json";
  ReleaseRegistry reg = ReleaseRegistry::open(p);
  reg.add("a", {dir / "a"}, summary(9, 10), pass());
  const std::string before = io::read_file(p);
  {
    // What a killed process leaves behind: a half-written temporary, never renamed.
    io::AtomicFile f(p);
    f.write(before.substr(0, before.size() / 2));
  }
  ReleaseRegistry again = ReleaseRegistry::open(p);
  CHECK(again.find("a") != nullptr);
  CHECK(io::read_file(p) == before);
  CHECK(nlohmann::json::parse(before)["releases"][0]["id"] == "a");
}

TEST_CASE("safety/registry and assessment readers survive mutated files", "[safety]") {
  test::TempDir dir;
  make_adapter(dir / "a", "w");
  make_adapter(dir / "b", "v");
  const fs::path p = dir / "registry.json";
  {
    ReleaseRegistry reg = ReleaseRegistry::open(p);
    reg.add("a", {dir / "a"}, summary(9, 10), pass());
    reg.add("b", {dir / "b"}, summary(5, 10), fail("drop"));
    reg.promote("a");
  }
  const std::string valid = io::read_file(p);
  Assessment a = summary(9, 10);
  a.results = {ProbeResult{"x", "c", "en", ProbeKind::harmful, true, 0.5, "d", "r"}};
  summarise(a);
  const std::string valid_assessment = assessment_to_json(a);
  std::uint64_t state = 88172645463325252ull;
  auto next = [&]() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  auto mutate = [&](std::string s) {
    for (int e = 0, n = 1 + static_cast<int>(next() % 3); e < n && !s.empty(); ++e) {
      const std::size_t at = next() % s.size();
      switch (next() % 4) {
        case 0: s[at] = "\"{}[],:0an-"[next() % 11]; break;
        case 1: s.insert(at, 1, "\"{}[],:1tn"[next() % 10]); break;
        case 2: s.erase(at, 1 + next() % 12); break;
        default: s.resize(at); break;
      }
    }
    return s;
  };
  int rejected = 0;
  for (int i = 0; i < 400; ++i) {
    const std::string text = mutate(valid);
    test::write_text(p, text);
    try {
      ReleaseRegistry::open(p);
    } catch (const safetune::Error&) {
      ++rejected;
      CHECK(io::read_file(p) == text);  // a rejected file is left exactly as it was
    } catch (const std::exception& e) {
      FAIL("non-safetune exception: " << e.what() << "\n" << text);
    }
    const std::string atext = mutate(valid_assessment);
    try {
      assessment_from_json(atext, "fuzz.json");
    } catch (const safetune::Error&) {
    } catch (const std::exception& e) {
      FAIL("non-safetune exception: " << e.what() << "\n" << atext);
    }
  }
  CHECK(rejected > 50);
}
