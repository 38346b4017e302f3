// More public benchmark layouts users bring (beside probes.hpp's AdvBench, XSTest and
// JailbreakBench): HarmBench's behaviour CSV and CHiSafetyBench's risky-question JSON.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

#include "safetune/safety/probes.hpp"

namespace safetune::safety {

// HarmBench behaviours (harmbench_behaviors_text_*.csv): columns Behavior, SemanticCategory,
// BehaviorID (FunctionalCategory, Tags ignored; ContextString optional) -> harmful probes, category
// = SemanticCategory, id = "harmbench-" + BehaviorID. A contextual behaviour is asked as
// "<ContextString>\n\n---\n\n<Behavior>", the layout HarmBench's own harness uses.
ProbeSuite load_harmbench(const std::filesystem::path& path);

// CHiSafetyBench risky questions (JSON array), either layout: grouped
// [{category, infos: [{id, question, category}]}] (risky_questions_without_dialog_history.json) or
// dialogue [{category, sub_category, input, history: [{role, content}]}]
// (risky_questions_with_dialog_history.json; the history precedes the final user turn) -> harmful
// probes, lang "zh", category = the item's own category (sub_category for dialogues). The
// multiple-choice file (mcq.json) has no answer key in the file, so it is rejected with that
// reason.
ProbeSuite load_chisafetybench(const std::filesystem::path& path);

// A probe suite named by a spec (the `--suite` of `assess` and `safety.suite` of the configs):
// one or more parts joined by ',' (probe ids must be unique across them), each
//   [FORMAT[:KIND]:]PATH
// FORMAT: safetune (a directory of the bundled three files, or one .jsonl), advbench, xstest,
// jailbreakbench, harmbench or chisafetybench; without one, a directory or a .jsonl is safetune and
// `default_format` (when not "auto") names the layout of anything else. KIND: harmful or benign,
// what a single-kind file holds (JailbreakBench's benign-behaviors.csv is
// `jailbreakbench:benign:`); default `default_kind`, else harmful. XSTest and safetune files say
// each probe's kind themselves, so a KIND for them is an error. Examples: "data/probes",
// "jailbreakbench:benign:benign-behaviors.csv", "data/probes,advbench:harmful_behaviors.csv".
// `~/` and `$SAFETUNE_HOME` at the start of each PATH are expanded. UsageError on a bad spec.
ProbeSuite load_suite_spec(const std::string& spec, const std::string& default_format = "auto",
                           std::optional<ProbeKind> default_kind = std::nullopt);

}  // namespace safetune::safety
