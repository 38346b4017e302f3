// Token generation following transformers' generate(): same logits processors, order and padding.
#include "safetune/model/generate.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>

#include "safetune/error.hpp"

namespace safetune::model {

namespace {

void check_options(const GenerateOptions& o) {
  if (o.max_new_tokens < 0) throw ModelError("max_new_tokens must be >= 0");
  if (o.do_sample && !(o.temperature > 0))
    throw ModelError("temperature must be > 0 when sampling");
  if (o.top_k < 0) throw ModelError("top_k must be >= 0");
  if (!(o.top_p > 0 && o.top_p <= 1)) throw ModelError("top_p must be in (0, 1]");
  if (!(o.repetition_penalty > 0)) throw ModelError("repetition_penalty must be > 0");
}

// transformers' RepetitionPenaltyLogitsProcessor: every id already in the sequence (prompt and
// padding included, as there) has its logit divided (if positive) or multiplied (if negative).
void apply_repetition_penalty(at::Tensor& scores, const at::Tensor& seq, double penalty) {
  auto picked = scores.gather(1, seq);
  picked = at::where(picked < 0, picked * penalty, picked / penalty);
  scores.scatter_(1, seq, picked);
}

// TopKLogitsWarper then TopPLogitsWarper, both keeping at least one token.
void apply_top_k_top_p(at::Tensor& scores, std::int64_t top_k, double top_p) {
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (top_k > 0) {
    auto k = std::min<std::int64_t>(top_k, scores.size(-1));
    auto kth = std::get<0>(scores.topk(k, -1)).narrow(-1, k - 1, 1);
    scores.masked_fill_(scores < kth, neg_inf);
  }
  if (top_p < 1.0) {
    auto [sorted, idx] = scores.sort(-1, /*descending=*/false);
    auto cum = sorted.softmax(-1).cumsum(-1);
    auto remove_sorted = cum <= (1.0 - top_p);
    remove_sorted.narrow(-1, remove_sorted.size(-1) - 1, 1).fill_(false);
    auto remove = remove_sorted.scatter(1, idx, remove_sorted);
    scores.masked_fill_(remove, neg_inf);
  }
}

}  // namespace

GenerateResult generate(CausalLM& model, const at::Tensor& input_ids,
                        const at::Tensor& attention_mask, const GenerateOptions& opt) {
  check_options(opt);
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(0) < 1 ||
      input_ids.size(1) < 1)
    throw ModelError("generate: input_ids must be a non-empty [batch, seq] tensor");
  const auto& cfg = model.config();
  std::vector<std::int64_t> stops = opt.stop_tokens ? *opt.stop_tokens : cfg.eos_token_ids;
  std::int64_t pad = opt.pad_token_id >= 0   ? opt.pad_token_id
                     : cfg.pad_token_id >= 0 ? cfg.pad_token_id
                     : !stops.empty()        ? stops[0]
                                             : 0;
  if (pad >= cfg.vocab_size)
    throw ModelError("pad token id " + std::to_string(pad) + " outside the vocabulary");

  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const auto dev = model.device();
  const auto B = input_ids.size(0);
  at::Tensor seq = input_ids.to(dev, at::kLong);
  at::Tensor mask =
      attention_mask.defined() ? attention_mask.to(dev, at::kLong) : at::ones_like(seq);
  if (mask.sizes() != seq.sizes())
    throw ModelError("generate: attention_mask must match input_ids");
  at::Tensor stop_ids = at::tensor(stops, at::TensorOptions().dtype(at::kLong)).to(dev);
  at::Tensor unfinished = at::ones({B}, at::TensorOptions().dtype(at::kBool).device(dev));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(opt.seed);

  KvCache cache = model.make_cache();
  std::vector<std::vector<std::int64_t>> produced(static_cast<size_t>(B));
  at::Tensor step_ids = seq;
  for (std::int64_t step = 0; step < opt.max_new_tokens; ++step) {
    at::Tensor logits = model.forward(step_ids, mask, {}, &cache, 1);
    at::Tensor scores = logits.select(1, logits.size(1) - 1).to(at::kFloat).clone();
    if (opt.repetition_penalty != 1.0)
      apply_repetition_penalty(scores, seq, opt.repetition_penalty);
    at::Tensor next;
    if (opt.do_sample) {
      if (opt.temperature != 1.0) scores = scores / opt.temperature;
      apply_top_k_top_p(scores, opt.top_k, opt.top_p);
      // Sampling on the CPU generator makes a seed give the same tokens on every device.
      auto probs = scores.softmax(-1).cpu();
      next = at::multinomial(probs, 1, false, gen).squeeze(1).to(dev);
    } else {
      next = scores.argmax(-1);
    }
    next = at::where(unfinished, next, at::full_like(next, pad));
    auto next_cpu = next.cpu();
    auto unfinished_cpu = unfinished.cpu();
    for (std::int64_t b = 0; b < B; ++b)
      if (unfinished_cpu[b].item<bool>()) produced[b].push_back(next_cpu[b].item<std::int64_t>());
    seq = at::cat({seq, next.unsqueeze(1)}, 1);
    mask = at::cat({mask, at::ones({B, 1}, mask.options())}, 1);
    if (stop_ids.numel() > 0) unfinished = unfinished & at::isin(next, stop_ids).logical_not();
    if (!unfinished.any().item<bool>()) break;
    step_ids = next.unsqueeze(1);
  }
  if (was_training) model.train();
  return GenerateResult{seq.cpu(), std::move(produced)};
}

GenerateResult generate(CausalLM& model, const std::vector<std::vector<std::int64_t>>& prompts,
                        const GenerateOptions& opt) {
  if (prompts.empty()) throw ModelError("generate: no prompts");
  size_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw ModelError("generate: empty prompt");
    longest = std::max(longest, p.size());
  }
  const auto& cfg = model.config();
  std::int64_t pad = opt.pad_token_id >= 0        ? opt.pad_token_id
                     : cfg.pad_token_id >= 0      ? cfg.pad_token_id
                     : !cfg.eos_token_ids.empty() ? cfg.eos_token_ids[0]
                                                  : 0;
  auto B = static_cast<std::int64_t>(prompts.size()), T = static_cast<std::int64_t>(longest);
  auto ids = at::full({B, T}, pad, at::TensorOptions().dtype(at::kLong));
  auto mask = at::zeros({B, T}, at::TensorOptions().dtype(at::kLong));
  auto ids_a = ids.accessor<std::int64_t, 2>();
  auto mask_a = mask.accessor<std::int64_t, 2>();
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<size_t>(b)];
    auto off = T - static_cast<std::int64_t>(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      ids_a[b][off + static_cast<std::int64_t>(i)] = p[i];
      mask_a[b][off + static_cast<std::int64_t>(i)] = 1;
    }
  }
  return generate(model, ids, mask, opt);
}

}  // namespace safetune::model
