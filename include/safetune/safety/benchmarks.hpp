// More public benchmark layouts users bring (beside probes.hpp's AdvBench, XSTest and
// JailbreakBench): HarmBench's behaviour CSV and CHiSafetyBench's risky-question JSON.
#pragma once
#include <filesystem>

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
// multiple-choice file (mcq.json) has no answer key in the file, so it is rejected with that reason.
ProbeSuite load_chisafetybench(const std::filesystem::path& path);

}  // namespace safetune::safety
