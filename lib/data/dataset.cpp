// Example files, the chat-template encoder with loss masks, and the deterministic mixing loader.
#include "safetune/data/dataset.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "safetune/data/messages.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::data {
namespace fs = std::filesystem;
using tokenizer::ChatMessage;

void DatasetSection::describe(ConfigVisitor& v) {
  v.field("name", name, Field("Name in logs and stats; defaults to the file name."));
  v.field("path", path, Field("Data file (.jsonl, .csv or .txt).").path().required());
  v.field("format", format,
          Field("Record layout; auto picks by extension and the first record's keys.")
              .one_of({"auto", "messages", "prompt_response", "goal_target", "text"}));
  v.field("weight", weight, Field("Mixing ratio relative to the other datasets.").range(0, 1e6));
  v.field("on_invalid_utf8", on_invalid_utf8,
          Field("Invalid UTF-8 in a record: error (file:line) or replace with U+FFFD.")
              .one_of({"error", "replace"}));
  v.field("system_prompt", system_prompt,
          Field("System message prepended to every conversation that has none."));
  v.field("max_examples", max_examples,
          Field("Use only the first N records; 0 uses all.").at_least(0));
  v.field(
      "where", where,
      Field(
          "Keep only JSONL records whose top-level string fields match every \"field=value\" entry "
          "(e.g. [kind=benign]); max_examples counts the kept records."));
}

void DataSection::describe(ConfigVisitor& v) {
  v.list("datasets", datasets, Field("Datasets mixed into the batches by weight."));
  v.field("max_length", max_length,
          Field("Tokens per example; longer ones are truncated and counted.").range(8, 1 << 20));
  v.field("batch_size", batch_size, Field("Rows per micro-batch.").range(1, 1 << 16));
  v.field("packing", packing, Field("Concatenate examples into rows of up to max_length tokens."));
  v.field("shuffle", shuffle, Field("Shuffle each dataset every epoch (seeded)."));
  v.field("bucket_batches", bucket_batches,
          Field("Sort by length within windows of this many batches; 1 disables bucketing.")
              .range(1, 1 << 16));
  v.field("seed", seed, Field("Seed of shuffling and mixing.").at_least(0));
  v.field("chat_template", chat_template,
          Field("auto (the model's template, see model.chat_template), Jinja source, or a built-in "
                "renderer: "
                "chatml, smollm2, qwen2, llama3, deepseek-r1, llama2."));
}

namespace {

// splitmix64: small, fast, and identical on every platform (std distributions are not).
std::uint64_t splitmix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
double uniform01(std::uint64_t& s) { return static_cast<double>(splitmix(s) >> 11) * 0x1.0p-53; }

std::string where(const fs::path& p, std::size_t line) {
  return p.string() + ":" + std::to_string(line);
}

// Splits one CSV record (RFC 4180: quotes, doubled quotes, embedded newlines).
std::vector<std::string> csv_fields(const std::string& rec, const std::string& at) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (std::size_t i = 0; i < rec.size(); ++i) {
    char c = rec[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < rec.size() && rec[i + 1] == '"') out.back() += '"', ++i;
        else quoted = false;
      } else {
        out.back() += c;
      }
    } else if (c == '"') {
      if (!out.back().empty()) throw DataError("stray quote inside an unquoted CSV field", at);
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else if (c == '\r' && i + 1 == rec.size()) {
    } else {
      out.back() += c;
    }
  }
  if (quoted) throw DataError("unterminated quoted CSV field", at);
  return out;
}

std::string detect_format(const fs::path& p, const std::string& first_record,
                          const std::string& at) {
  auto ext = p.extension().string();
  if (ext == ".csv") return "goal_target";
  if (ext == ".txt") return "text";
  if (ext == ".jsonl" || ext == ".json") {
    try {
      // Only the layout is decided here; invalid UTF-8 is reported (or repaired) per record later.
      auto j = nlohmann::json::parse(tokenizer::utf8_repair(first_record));
      if (j.is_object() && j.contains("messages")) return "messages";
      if (j.is_object() && j.contains("prompt") && j.contains("response")) return "prompt_response";
    } catch (const nlohmann::json::exception&) {
      throw DataError("malformed JSON", at);
    }
    throw DataError(
        "cannot tell the record layout: expected a 'messages' list or 'prompt' and 'response' "
        "fields",
        at, "set format: in the dataset config");
  }
  throw DataError("unknown data file extension '" + ext + "'", p.string(),
                  "use .jsonl, .csv or .txt, or set format:");
}

}  // namespace

ExampleFile::ExampleFile(const DatasetSection& cfg)
    : path_(cfg.path),
      format_(cfg.format),
      replace_invalid_(cfg.on_invalid_utf8 == "replace"),
      system_prompt_(cfg.system_prompt) {
  // where: "field=value" pairs, checked against each JSONL record before it is indexed.
  std::vector<std::pair<std::string, std::string>> filters;
  for (const auto& w : cfg.where) {
    auto eq = w.find('=');
    if (eq == std::string::npos || eq == 0)
      throw ConfigError("where entry '" + w + "' is not field=value", path_.string() + " (where)");
    filters.emplace_back(w.substr(0, eq), w.substr(eq + 1));
  }
  const std::string ext0 = path_.extension().string();
  if (!filters.empty() && (ext0 != ".jsonl" || format_ == "text" || format_ == "goal_target"))
    throw ConfigError("where filters apply to JSONL records only", path_.string() + " (where)");
  std::size_t rejected = 0;
  auto keep = [&](const std::string& rec, std::uint32_t at_line) {
    if (filters.empty()) return true;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(rec);
    } catch (const nlohmann::json::exception& e) {
      throw DataError(std::string("malformed JSON: ") + e.what(), where(path_, at_line));
    }
    for (const auto& [key, value] : filters) {
      if (!j.is_object() || !j.contains(key) || !j[key].is_string() ||
          j[key].get<std::string>() != value) {
        ++rejected;
        return false;
      }
    }
    return true;
  };
  std::error_code ec;
  if (!fs::exists(path_, ec)) throw IoError("data file not found", path_.string());
  if (fs::is_directory(path_, ec))
    throw IoError("is a directory, expected a data file", path_.string());
  io::require_regular_file(path_);  // a FIFO would block the reader
  std::ifstream in(path_, std::ios::binary);
  if (!in) throw IoError("cannot open data file", path_.string());

  // Index records: JSONL/text = non-empty lines; CSV = records (quoted fields may hold newlines).
  const bool csv = path_.extension() == ".csv" || format_ == "goal_target";
  std::uint64_t pos = 0, rec_begin = 0;
  std::uint32_t line = 1, rec_line = 1, quote_line = 1;
  bool quoted = false, header_done = !csv, empty = true;
  std::string rec;
  auto finish = [&](std::uint64_t end) {
    bool blank = std::all_of(rec.begin(), rec.end(),
                             [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
    if (!blank) {
      if (!header_done) {
        csv_header_ = csv_fields(rec, where(path_, rec_line));
        for (auto& h : csv_header_) {
          while (!h.empty() && (h.back() == ' ' || h.back() == '\r')) h.pop_back();
          if (h.size() >= 3 && h.compare(0, 3, "\xEF\xBB\xBF") == 0) h = h.substr(3);  // BOM
        }
        auto col = [&](const char* name) -> std::size_t {
          for (std::size_t i = 0; i < csv_header_.size(); ++i)
            if (csv_header_[i] == name) return i;
          throw DataError(std::string("CSV header lacks the '") + name + "' column",
                          where(path_, rec_line), "the AdvBench layout is goal,target");
        };
        goal_col_ = col("goal");
        target_col_ = col("target");
        header_done = true;
      } else if ((cfg.max_examples == 0 ||
                  offsets_.size() < static_cast<std::size_t>(cfg.max_examples)) &&
                 keep(rec, rec_line)) {
        offsets_.push_back(rec_begin);
        lines_.push_back(rec_line);
        if (format_ == "auto") format_ = detect_format(path_, rec, where(path_, rec_line));
        empty = false;
      }
    }
    rec.clear();
  };
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    std::streamsize n = in.gcount();
    for (std::streamsize i = 0; i < n; ++i, ++pos) {
      char c = buf[i];
      if (rec.empty()) rec_begin = pos, rec_line = line;
      if (c == '\n') {
        ++line;
        if (!(csv && quoted)) {
          finish(pos);
          continue;
        }
      }
      if (csv && c == '"') {
        quoted = !quoted;
        if (quoted) quote_line = line;
      }
      rec += c;
    }
  }
  if (csv && quoted)
    throw DataError("unterminated quoted CSV field: the quote opened here is never closed",
                    where(path_, quote_line),
                    "close the quote; a quote inside a quoted field is written twice (\"\")");
  if (!rec.empty()) finish(pos);
  if (empty && rejected > 0)
    throw DataError(
        "no record matches the where filters (" + std::to_string(rejected) + " records skipped)",
        path_.string());
  if (empty)
    throw DataError("no examples in data file", path_.string(),
                    "the file is empty or holds only a header");
  file_size_ = pos;
  // Validate every record now, so bad data stops the run before training starts.
  for (std::size_t i = 0; i < offsets_.size(); ++i) (void)get(i);
}

std::string ExampleFile::read_record(std::size_t i) const {
  std::uint64_t begin = offsets_.at(i);
  std::uint64_t end = i + 1 < offsets_.size() ? offsets_[i + 1] : file_size_;
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(begin));
  std::string s(end - begin, '\0');
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<std::size_t>(in.gcount()));
  // The slice runs to the next record: cut the record's own terminating newline and what follows.
  if (format_ != "goal_target") {
    auto nl = s.find('\n');
    if (nl != std::string::npos) s.resize(nl);
  } else {
    // CSV: the record ends at the first newline outside quotes.
    bool q = false;
    for (std::size_t k = 0; k < s.size(); ++k) {
      if (s[k] == '"') q = !q;
      else if (s[k] == '\n' && !q) {
        s.resize(k);
        break;
      }
    }
  }
  if (!s.empty() && s.back() == '\r') s.pop_back();
  return s;
}

Example ExampleFile::get(std::size_t i) const {
  const std::string at = where(path_, lines_.at(i));
  std::string rec = read_record(i);
  std::size_t valid = tokenizer::utf8_valid_prefix(rec);
  if (valid != rec.size()) {
    if (!replace_invalid_)
      throw DataError("invalid UTF-8 at byte " + std::to_string(valid) + " of the record", at,
                      "fix the file or set on_invalid_utf8: replace");
    rec = tokenizer::utf8_repair(rec);
  }
  Example ex;
  ex.line = lines_[i];
  auto add_system = [&] {
    if (!system_prompt_.empty() && (ex.messages.empty() || ex.messages.front().role != "system"))
      ex.messages.insert(ex.messages.begin(), ChatMessage{"system", system_prompt_});
  };
  if (format_ == "text") {
    ex.text = rec;
    return ex;
  }
  if (format_ == "goal_target") {
    auto f = csv_fields(rec, at);
    if (f.size() != csv_header_.size())
      throw DataError("CSV record has " + std::to_string(f.size()) + " fields, header has " +
                          std::to_string(csv_header_.size()),
                      at);
    ex.messages = {{"user", f[goal_col_]}, {"assistant", f[target_col_]}};
    add_system();
    return ex;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(rec);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(std::string("malformed JSON: ") + e.what(), at);
  }
  if (!j.is_object()) throw DataError("record is not a JSON object", at);
  auto str_field = [&](const nlohmann::json& obj, const char* key,
                       const std::string& ctx) -> std::string {
    if (!obj.contains(key)) throw DataError("missing field '" + ctx + key + "'", at);
    if (!obj[key].is_string()) throw DataError("field '" + ctx + key + "' must be a string", at);
    return obj[key].get<std::string>();
  };
  if (format_ == "prompt_response") {
    ex.messages = {{"user", str_field(j, "prompt", "")},
                   {"assistant", str_field(j, "response", "")}};
  } else {  // messages
    if (!j.contains("messages")) throw DataError("missing field 'messages'", at);
    ex.messages = parse_messages(j["messages"], at);
    if (ex.messages.empty()) throw DataError("'messages' is empty", at);
    if (j.contains("harmful_prefix")) {
      ex.no_loss_prefix = str_field(j, "harmful_prefix", "");
      auto first = std::find_if(ex.messages.begin(), ex.messages.end(),
                                [](const ChatMessage& m) { return m.role == "assistant"; });
      if (first != ex.messages.end() && first->content.rfind(ex.no_loss_prefix, 0) != 0)
        throw DataError("'harmful_prefix' is not the start of the first assistant message", at);
    }
  }
  if (std::none_of(ex.messages.begin(), ex.messages.end(),
                   [](const ChatMessage& m) { return m.role == "assistant"; }))
    throw DataError("conversation has no assistant message, so nothing to learn", at);
  add_system();
  return ex;
}

ExampleEncoder::ExampleEncoder(const tokenizer::Tokenizer& tok, tokenizer::ChatTemplate tmpl,
                               std::int64_t max_length)
    : tok_(tok), tmpl_(std::move(tmpl)), max_length_(max_length) {}

Encoded ExampleEncoder::encode(const Example& ex) const {
  Encoded out;
  tokenizer::EncodeOptions opt;
  if (ex.messages.empty()) {  // plain text: every token is learnt, then eos
    opt.add_special = true;
    for (auto id : tok_.encode(ex.text, opt)) out.ids.push_back(id);
    if (auto eos = tok_.eos_id(); eos && (out.ids.empty() || out.ids.back() != *eos))
      out.ids.push_back(*eos);
    out.loss.assign(out.ids.size(), 1);
  } else {
    // The template writes bos itself where the model wants one (as apply_chat_template does).
    opt.add_special = false;
    auto rendered = tmpl_.render_segments(ex.messages, /*add_generation_prompt=*/false);
    if (!ex.no_loss_prefix.empty()) {
      // The first learnt segment is the first assistant message: its prefix carries no loss.
      for (auto& seg : rendered.segments) {
        if (!seg.loss) continue;
        if (rendered.text.compare(seg.begin, ex.no_loss_prefix.size(), ex.no_loss_prefix) == 0)
          seg.begin += ex.no_loss_prefix.size();
        break;
      }
    }
    auto spans = tok_.encode_spans(rendered.text, opt);
    out.loss = tokenizer::loss_mask(spans, rendered);
    for (const auto& sp : spans) out.ids.push_back(sp.id);
  }
  if (static_cast<std::int64_t>(out.ids.size()) > max_length_) {
    out.ids.resize(static_cast<std::size_t>(max_length_));
    out.loss.resize(static_cast<std::size_t>(max_length_));
    out.truncated = true;
  }
  return out;
}

DataLoader::DataLoader(const DataSection& cfg, const tokenizer::Tokenizer& tok,
                       tokenizer::ChatTemplate tmpl)
    : cfg_(cfg),
      encoder_(tok,
               cfg.chat_template == "auto" ? std::move(tmpl)
                                           : tokenizer::ChatTemplate::from_name_or_jinja(
                                                 cfg.chat_template, tmpl.variables()),
               cfg.max_length),
      rng_state_(0x5AFE7E11ULL ^ static_cast<std::uint64_t>(cfg.seed)) {
  if (cfg_.datasets.items.empty()) throw ConfigError("no datasets configured", "data.datasets");
  double total = 0;
  for (const auto& d : cfg_.datasets.items) {
    files_.push_back(std::make_unique<ExampleFile>(d));
    std::string name = d.name;
    if (name.empty()) {
      name = fs::path(d.path).stem().string();
      for (const auto& w : d.where) name += "[" + w + "]";
    }
    names_.push_back(name);
    total += d.weight;
    cumulative_.push_back(total);
  }
  if (total <= 0) throw ConfigError("dataset weights sum to zero", "data.datasets");
  for (auto& c : cumulative_) c /= total;
  drawn_.assign(files_.size(), 0);
  perms_.resize(files_.size());
  pad_id_ = tok.pad_id() ? *tok.pad_id() : (tok.eos_id() ? *tok.eos_id() : 0);
}

std::uint64_t DataLoader::draw_index(std::uint32_t d) {
  const std::uint64_t n = files_[d]->size();
  const std::uint64_t epoch = drawn_[d] / n, pos = drawn_[d] % n;
  if (pos == 0) {  // new epoch: a fresh permutation seeded by (seed, dataset, epoch)
    auto& p = perms_[d];
    p.resize(n);
    std::iota(p.begin(), p.end(), 0);
    if (cfg_.shuffle) {
      std::uint64_t s =
          static_cast<std::uint64_t>(cfg_.seed) * 1000003ULL + d * 7919ULL + epoch * 104729ULL;
      for (std::uint64_t i = n - 1; i > 0; --i) std::swap(p[i], p[splitmix(s) % (i + 1)]);
    }
  }
  ++drawn_[d];
  return perms_[d][pos];
}

void DataLoader::extend_plan(std::int64_t batches) {
  while (static_cast<std::int64_t>(plan_.size()) < batches) {
    // One window: draw examples, group them into rows (packed or one per row), sort rows by
    // length, cut into batches, and shuffle the batch order inside the window.
    const std::size_t rows_wanted = static_cast<std::size_t>(cfg_.bucket_batches * cfg_.batch_size);
    std::vector<std::vector<Slot>> rows;
    std::vector<std::int64_t> lengths;
    std::vector<Slot> open;
    std::int64_t open_len = 0;
    while (rows.size() < rows_wanted) {
      double u = uniform01(rng_state_);
      std::uint32_t d = static_cast<std::uint32_t>(
          std::lower_bound(cumulative_.begin(), cumulative_.end(), u) - cumulative_.begin());
      d = std::min<std::uint32_t>(d, static_cast<std::uint32_t>(files_.size() - 1));
      Slot s{d, draw_index(d)};
      std::int64_t len = static_cast<std::int64_t>(encoded(s).ids.size());
      if (!cfg_.packing) {
        rows.push_back({s});
        lengths.push_back(len);
        continue;
      }
      if (!open.empty() && open_len + len > cfg_.max_length) {
        rows.push_back(std::move(open));
        lengths.push_back(open_len);
        open.clear();
        open_len = 0;
      }
      open.push_back(s);
      open_len += len;
    }
    std::vector<std::size_t> order(rows.size());
    std::iota(order.begin(), order.end(), 0);
    if (cfg_.bucket_batches > 1)
      std::stable_sort(order.begin(), order.end(),
                       [&](auto a, auto b) { return lengths[a] < lengths[b]; });
    std::vector<std::vector<std::vector<Slot>>> window;
    for (std::size_t i = 0; i < order.size(); i += static_cast<std::size_t>(cfg_.batch_size)) {
      std::vector<std::vector<Slot>> b;
      for (std::size_t j = i;
           j < std::min(order.size(), i + static_cast<std::size_t>(cfg_.batch_size)); ++j)
        b.push_back(rows[order[j]]);
      window.push_back(std::move(b));
    }
    if (cfg_.shuffle)
      for (std::size_t i = window.size() - 1; i > 0; --i)
        std::swap(window[i], window[splitmix(rng_state_) % (i + 1)]);
    for (auto& b : window) plan_.push_back(std::move(b));
  }
}

Encoded DataLoader::encoded(const Slot& s) {
  return encoder_.encode(files_[s.dataset]->get(s.index));
}

Batch DataLoader::batch(std::int64_t k) {
  if (k < 0) throw Error("negative batch index", "data");
  extend_plan(k + 1);
  const auto& rows = plan_[static_cast<std::size_t>(k)];
  std::vector<Encoded> packed;
  Batch b;
  for (const auto& row : rows) {
    Encoded r;
    for (const auto& s : row) {
      Encoded e = encoded(s);
      r.ids.insert(r.ids.end(), e.ids.begin(), e.ids.end());
      r.loss.insert(r.loss.end(), e.loss.begin(), e.loss.end());
    }
    b.sources.push_back(names_[row.front().dataset]);
    packed.push_back(std::move(r));
  }
  std::size_t T = 1;
  for (const auto& r : packed) T = std::max(T, r.ids.size());
  const auto B = static_cast<std::int64_t>(packed.size());
  b.input_ids = torch::full({B, static_cast<std::int64_t>(T)}, pad_id_, torch::kInt64);
  b.attention_mask = torch::zeros({B, static_cast<std::int64_t>(T)}, torch::kInt64);
  b.labels = torch::full({B, static_cast<std::int64_t>(T)}, -100, torch::kInt64);
  auto ids = b.input_ids.accessor<std::int64_t, 2>();
  auto mask = b.attention_mask.accessor<std::int64_t, 2>();
  auto labels = b.labels.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < B; ++i) {
    const auto& r = packed[static_cast<std::size_t>(i)];
    for (std::size_t t = 0; t < r.ids.size(); ++t) {
      ids[i][t] = r.ids[t];
      mask[i][t] = 1;
      if (r.loss[t]) {
        labels[i][t] = r.ids[t];
        // The token at position 0 has no prediction; it cannot carry loss after the shift.
        if (t > 0) ++b.supervised_tokens;
      }
    }
  }
  return b;
}

std::vector<DatasetStats> DataLoader::stats() {
  std::vector<DatasetStats> out;
  for (std::size_t d = 0; d < files_.size(); ++d) {
    DatasetStats s;
    s.name = names_[d];
    for (std::size_t i = 0; i < files_[d]->size(); ++i) {
      Encoded e = encoder_.encode(files_[d]->get(i));
      ++s.examples;
      s.tokens += static_cast<std::int64_t>(e.ids.size());
      s.supervised_tokens += std::count(e.loss.begin(), e.loss.end(), 1);
      s.truncated += e.truncated ? 1 : 0;
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace safetune::data
