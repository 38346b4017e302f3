// Training data: example files (JSONL messages or prompt/response, CSV goal,target, plain text)
// read by offset without holding their text, tokenized with loss masks on assistant tokens, and
// batched deterministically (shuffle, length buckets, packing, mixing by ratio) so that batch
// number k is a pure function of (config, k) — which makes resumed training exact.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "safetune/config.hpp"
#include "safetune/tokenizer/chat_template.hpp"
#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::data {

struct DatasetSection : ConfigSection {
  std::string name;
  std::string path;
  std::string format = "auto";            // auto | messages | prompt_response | goal_target | text
  double weight = 1.0;                    // mixing ratio (normalised over datasets)
  std::string on_invalid_utf8 = "error";  // error | replace
  std::string system_prompt;              // prepended as a system message when set
  std::int64_t max_examples = 0;          // 0 = all
  std::vector<std::string>
      where;  // "field=value" filters on JSONL records' top-level fields (all must hold)
  void describe(ConfigVisitor& v) override;
};

struct DataSection : ConfigSection {
  SectionList<DatasetSection> datasets;
  std::int64_t max_length = 512;
  std::int64_t batch_size = 4;
  bool packing = false;
  bool shuffle = true;
  std::int64_t bucket_batches = 8;  // length-bucketing window, in batches; 1 disables
  std::int64_t seed = 0;
  std::string chat_template = "auto";  // auto (from the model) or a template name
  void describe(ConfigVisitor& v) override;
};

// One example before tokenization. Plain text examples have `text` and no messages.
struct Example {
  std::vector<tokenizer::ChatMessage> messages;
  std::string text;
  std::size_t line = 0;  // 1-based line (or CSV record) in its file
  // Deep-alignment augmentation (Qi et al. 2024): the first assistant message starts with this
  // harmful-sounding prefix, which carries no loss; only the recovery after it is learnt.
  std::string no_loss_prefix;
};

// A file of examples, indexed by byte offsets on open; get(i) reads and parses record i only.
class ExampleFile {
 public:
  ExampleFile(const DatasetSection& cfg);
  std::size_t size() const { return offsets_.size(); }
  Example get(std::size_t i) const;
  const std::string& format() const { return format_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::string read_record(std::size_t i) const;
  std::filesystem::path path_;
  std::string format_;
  bool replace_invalid_;
  std::string system_prompt_;
  std::vector<std::uint64_t> offsets_;  // byte offset where each record begins
  std::vector<std::uint32_t> lines_;
  std::uint64_t file_size_ = 0, ends_guard_ = 0;
  std::vector<std::string> csv_header_;
  std::size_t goal_col_ = 0, target_col_ = 1;
};

// Token ids plus a loss mask (1 where the model must learn the token).
struct Encoded {
  std::vector<std::int64_t> ids;
  std::vector<std::uint8_t> loss;
  bool truncated = false;
};

// Renders through the chat template and marks the assistant content + end-of-turn token.
class ExampleEncoder {
 public:
  ExampleEncoder(const tokenizer::Tokenizer& tok, tokenizer::ChatTemplate tmpl,
                 std::int64_t max_length);
  Encoded encode(const Example& ex) const;

 private:
  const tokenizer::Tokenizer& tok_;
  tokenizer::ChatTemplate tmpl_;
  std::int64_t max_length_;
};

struct Batch {
  at::Tensor input_ids;       // [B, T] int64, right-padded
  at::Tensor attention_mask;  // [B, T] int64, 1 = token
  at::Tensor labels;  // [B, T] int64, -100 where no loss (already aligned to inputs, not shifted)
  std::int64_t supervised_tokens = 0;
  std::vector<std::string> sources;  // dataset name per row
};

struct DatasetStats {
  std::string name;
  std::int64_t examples = 0, tokens = 0, supervised_tokens = 0, truncated = 0;
};

// Mixes datasets by weight and serves batch k deterministically.
class DataLoader {
 public:
  DataLoader(const DataSection& cfg, const tokenizer::Tokenizer& tok, tokenizer::ChatTemplate tmpl);
  Batch batch(std::int64_t k);
  // Full pass over every dataset (for `safetune data stats`).
  std::vector<DatasetStats> stats();
  std::int64_t pad_id() const { return pad_id_; }
  const std::vector<std::unique_ptr<ExampleFile>>& files() const { return files_; }

 private:
  struct Slot {
    std::uint32_t dataset;
    std::uint64_t index;
  };
  void extend_plan(std::int64_t batches);
  std::uint64_t draw_index(std::uint32_t dataset);
  Encoded encoded(const Slot& s);
  DataSection cfg_;
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<ExampleFile>> files_;
  std::vector<double> cumulative_;
  ExampleEncoder encoder_;
  std::int64_t pad_id_ = 0;
  std::vector<std::vector<std::vector<Slot>>> plan_;  // batch -> rows -> examples packed in a row
  std::vector<std::uint64_t> drawn_;                  // examples drawn so far per dataset
  std::vector<std::vector<std::uint64_t>> perms_;     // this epoch's order per dataset
  std::uint64_t rng_state_;
};

}  // namespace safetune::data
