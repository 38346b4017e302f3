// Atomic writes, metrics JSONL, progress formatting and error formatting.
#include <sys/stat.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/dir_lock.hpp"
#include "safetune/log.hpp"
#include "support.hpp"
#include "util/progress.hpp"

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

TEST_CASE("atomic write through a symlink updates its target and keeps the link", "[util]") {
  test::TempDir dir;
  test::write_text(dir / "real" / "registry.json", "old");
  fs::create_symlink(dir / "real" / "registry.json", dir / "link.json");  // absolute target
  fs::create_symlink("link.json", dir / "chain.json");                    // relative, via a chain
  io::atomic_write(dir / "link.json", "new");
  CHECK(fs::is_symlink(dir / "link.json"));
  CHECK(io::read_file(dir / "real" / "registry.json") == "new");
  io::atomic_write(dir / "chain.json", "newer");
  CHECK(fs::is_symlink(dir / "chain.json"));
  CHECK(fs::is_symlink(dir / "link.json"));
  CHECK(io::read_file(dir / "real" / "registry.json") == "newer");
  // A dangling link creates the file it names.
  fs::create_symlink(dir / "real" / "later.json", dir / "dangling.json");
  io::atomic_write(dir / "dangling.json", "x");
  CHECK(fs::is_symlink(dir / "dangling.json"));
  CHECK(io::read_file(dir / "real" / "later.json") == "x");
  // A loop is an IoError, not a hang.
  fs::create_symlink(dir / "loop2", dir / "loop1");
  fs::create_symlink(dir / "loop1", dir / "loop2");
  CHECK_THROWS_AS(io::atomic_write(dir / "loop1", "x"), IoError);
}

TEST_CASE("reading a FIFO is refused at once", "[util]") {
  test::TempDir dir;
  REQUIRE(::mkfifo((dir / "pipe").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(io::read_file(dir / "pipe"),
                    Catch::Contains("not a regular file") && Catch::Contains("pipe"));
}

TEST_CASE("a directory lock excludes a second holder and names the first one's pid", "[util]") {
  test::TempDir dir;
  {
    io::DirectoryLock first(dir.path());
    CHECK(first.held());
    CHECK(first.created_file());
    // flock locks belong to the open file description: a second open in this process conflicts
    // just as another process would.
    CHECK_THROWS_WITH(io::DirectoryLock(dir.path()),
                      Catch::Contains(dir.path().string()) &&
                          Catch::Contains("in use by another safetune run") &&
                          Catch::Contains("(pid " + std::to_string(::getpid()) + ")"));
  }
  io::DirectoryLock again(dir.path());  // released with the first
  CHECK(again.held());
  CHECK_FALSE(again.created_file());
  again.release_and_remove();
  CHECK_FALSE(fs::exists(dir / io::DirectoryLock::kFileName));
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
  std::string s = progress_line("train", 25, 100, 10.0, "step", "loss 1.2", 10);
  CHECK(s == "train  25/100 [==>       ] 2.50 step/s ETA 0:30 elapsed 0:10  loss 1.2");
  CHECK_THAT(progress_line("gen", 5, 0, 2.0, "tok", ""), Contains("2.50 tok/s"));
  CHECK(format_duration(3725) == "1:02:05");
}

TEST_CASE("log level parsing", "[util]") {
  CHECK(parse_log_level("debug") == LogLevel::debug);
  CHECK_THROWS_AS(parse_log_level("loud"), UsageError);
}
