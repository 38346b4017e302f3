// TensorBoard event files from the trainer, read back by the tensorboard package's own reader.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "safetune/train/tensorboard.hpp"
#include "safetune/train/trainer.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::train;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find("tfevents") != std::string::npos) out.push_back(e.path());
  return out;
}

// Trains w towards a fixed target for `steps` steps into `dir`.
void train_toy(const fs::path& dir, bool tensorboard) {
  torch::manual_seed(3);
  auto w = torch::zeros({4, 2}, torch::requires_grad());
  auto target = torch::arange(8, torch::kFloat).reshape({4, 2}) / 8.0;
  TrainSection c;
  c.max_steps = 6;
  c.lr = 0.1;
  c.schedule = "linear";
  c.warmup_steps = 2;
  c.tensorboard = tensorboard;
  Trainer t(
      c, {{"w", w}}, dir, {[&](Trainer&, std::int64_t cursor) {
        auto x = torch::randn({8, 4}, at::make_generator<at::CPUGeneratorImpl>(cursor));
        auto loss = (x.matmul(w) - x.matmul(target)).pow(2).mean();
        return MicroStep{
            loss, {{"mse", loss.item<double>()}, {"kl_anchor", 0.5 * loss.item<double>()}}, 8};
      }});
  REQUIRE(t.run() == TrainStatus::completed);
}
}  // namespace

TEST_CASE("CRC-32C matches the published check value", "[train]") {
  CHECK(crc32c("123456789") == 0xE3069283u);  // RFC 3720 / the CRC catalogue's check value
  CHECK(crc32c("") == 0u);
}

TEST_CASE("trainer's TensorBoard event file reads back in tensorboard with metrics.jsonl's values",
          "[train][reference]") {
  test::TempDir dir;
  train_toy(dir / "run", /*tensorboard=*/true);
  auto files = event_files(dir / "run");
  REQUIRE(files.size() == 1);
  // Reference: tensorboard's EventAccumulator (what `tensorboard --logdir` uses), and its own
  // masked CRC-32C over every record.
  auto r = test::run_python(R"(
import json, struct, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
run, events = sys.argv[1], sys.argv[2]
data = open(events, "rb").read()
pos = records = 0
while pos < len(data):
    (length,) = struct.unpack_from("<Q", data, pos)
    assert struct.unpack_from("<I", data, pos + 8)[0] == masked_crc32c(data[pos:pos + 8]), "length crc"
    body = data[pos + 12:pos + 12 + length]
    assert struct.unpack_from("<I", data, pos + 12 + length)[0] == masked_crc32c(body), "data crc"
    pos += 16 + length
    records += 1
assert pos == len(data) and records == 7, (pos, len(data), records)
acc = EventAccumulator(run)
acc.Reload()
tags = set(acc.Tags()["scalars"])
metrics = [json.loads(l) for l in open(run + "/metrics.jsonl")]
for key in ["loss", "lr", "grad_norm", "loss_mse", "loss_kl_anchor", "supervised_tokens"]:
    assert key in tags, (key, sorted(tags))
    got = [(e.step, e.value) for e in acc.Scalars(key)]
    want = [(m["step"], m[key]) for m in metrics]
    assert [s for s, _ in got] == [s for s, _ in want], (key, got, want)
    for (_, g), (_, w) in zip(got, want):
        assert abs(g - w) <= 1e-6 * max(1.0, abs(w)), (key, g, w)
print("ok", len(tags), "tags")
)",
                            {(dir / "run").string(), files[0].string()});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("ok"));
}

TEST_CASE("train.tensorboard: false writes metrics.jsonl only", "[train]") {
  test::TempDir dir;
  train_toy(dir / "run", /*tensorboard=*/false);
  CHECK(fs::exists(dir / "run" / "metrics.jsonl"));
  CHECK(event_files(dir / "run").empty());
}
