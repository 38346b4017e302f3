// One chat turn, the unit probes and the ScoringModel interface exchange. A plain struct so the
// model side can map it onto any chat template without depending on the rest of safety/.
#pragma once
#include <string>

namespace safetune::safety {

struct Message {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
  bool operator==(const Message&) const = default;
};

}  // namespace safetune::safety
