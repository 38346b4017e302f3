// One chat turn, the unit probes and the ScoringModel interface exchange. A plain struct so the
// model side can map it onto any chat template without depending on the rest of safety/.
#pragma once
#include <iosfwd>
#include <string>

namespace safetune::safety {

struct Message {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
  bool operator==(const Message&) const = default;
};

// "role: content", for test failures and debugging.
std::ostream& operator<<(std::ostream& os, const Message& m);

}  // namespace safetune::safety
