// Atomic writes, metrics JSONL, progress formatting and error formatting.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/log.hpp"
#include "support.hpp"

using namespace safetune;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

TEST_CASE("atomic write replaces the target only on commit", "[util]") {
  test::TempDir dir;
  fs::path target = dir / "sub" / "a.txt";
  io::atomic_write(target, "first");
  CHECK(io::read_file(target) == "first");
  {
    io::AtomicFile f(target);
    f.write("second, never committed");
  }  // destroyed without commit: target unchanged, no temp left behind
  CHECK(io::read_file(target) == "first");
  int files = 0;
  for (auto& e : fs::directory_iterator(dir / "sub")) (void)e, ++files;
  CHECK(files == 1);
  io::AtomicFile g(target);
  g.write("third");
  CHECK(io::read_file(target) == "first");
  g.commit();
  CHECK(io::read_file(target) == "third");
  CHECK(g.bytes_written() == 5);
}

TEST_CASE("atomic write into an unwritable place is an IoError naming the path", "[util]") {
  CHECK_THROWS_AS(io::atomic_write("/proc/safetune-cannot/x", "x"), IoError);
  CHECK_THROWS_WITH(io::read_file("/nonexistent/file.bin"), "/nonexistent/file.bin: no such file");
}

TEST_CASE("Error formats where, what and hint on one line", "[util]") {
  ConfigError e("bad value", "a.yaml:1:2", "use a number");
  CHECK(std::string(e.what()) == "a.yaml:1:2: bad value (hint: use a number)");
  CHECK(e.where() == "a.yaml:1:2");
  CHECK(std::string(Error("plain").what()) == "plain");
}

TEST_CASE("metrics writer emits one JSON object per line", "[util]") {
  test::TempDir dir;
  {
    MetricsWriter m(dir / "metrics.jsonl");
    m.write({{"step", std::int64_t{1}}, {"loss", 2.5}, {"phase", std::string("stage1")}});
    m.write({{"step", std::int64_t{2}}, {"ok", true}});
  }
  std::ifstream in(dir / "metrics.jsonl");
  std::string l1, l2, l3;
  std::getline(in, l1);
  std::getline(in, l2);
  CHECK_FALSE(std::getline(in, l3));
  auto j1 = nlohmann::json::parse(l1);
  CHECK(j1["step"] == 1);
  CHECK(j1["loss"] == 2.5);
  CHECK(j1["phase"] == "stage1");
  CHECK(nlohmann::json::parse(l2)["ok"] == true);
}

TEST_CASE("progress line shows count, rate and ETA", "[util]") {
  std::string s = Progress::render("train", 25, 100, 10.0, "step", "loss 1.2", 10);
  CHECK(s == "train  25/100 [==>       ] 2.50 step/s ETA 0:30 elapsed 0:10  loss 1.2");
  CHECK_THAT(Progress::render("gen", 5, 0, 2.0, "tok", ""), Contains("2.50 tok/s"));
  CHECK(format_duration(3725) == "1:02:05");
}

TEST_CASE("log level parsing", "[util]") {
  CHECK(parse_log_level("debug") == LogLevel::debug);
  CHECK_THROWS_AS(parse_log_level("loud"), UsageError);
}
