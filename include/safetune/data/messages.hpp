// Chat messages from JSON ([{"role", "content"}, ...]): the one parser behind the training data
// files and `safetune tokenize` (probe suites keep their stricter schema in safety/, which does not
// depend on data/).
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "safetune/tokenizer/chat_template.hpp"

namespace safetune::data {

// The messages of a JSON list; DataError at `where` naming the element and key (e.g.
// "missing field 'messages[0].content'", "unknown role 'robot' in messages[0].role"). Roles are
// system, user or assistant. An empty list is returned as such (callers decide whether it is
// allowed).
std::vector<tokenizer::ChatMessage> parse_messages(const nlohmann::json& list,
                                                   const std::string& where);

// One line of chat JSONL: an object with "messages", or a bare list. DataError "not valid JSON" /
// "missing field 'messages'" at `where` otherwise.
std::vector<tokenizer::ChatMessage> parse_messages_line(const std::string& line,
                                                        const std::string& where);

}  // namespace safetune::data
