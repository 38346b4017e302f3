// The one parser of chat messages in JSON.
#include "safetune/data/messages.hpp"

#include <nlohmann/json.hpp>

#include "safetune/error.hpp"

namespace safetune::data {

std::vector<tokenizer::ChatMessage> parse_messages(const nlohmann::json& list,
                                                   const std::string& where) {
  if (!list.is_array()) throw DataError("field 'messages' must be a list", where);
  std::vector<tokenizer::ChatMessage> out;
  for (std::size_t k = 0; k < list.size(); ++k) {
    const auto& m = list[k];
    const std::string at = "messages[" + std::to_string(k) + "]";
    if (!m.is_object()) throw DataError("'" + at + "' must be an object", where);
    auto field = [&](const char* key) {
      const std::string name = at + "." + key;
      if (!m.contains(key)) throw DataError("missing field '" + name + "'", where);
      if (!m[key].is_string()) throw DataError("field '" + name + "' must be a string", where);
      return m[key].get<std::string>();
    };
    std::string role = field("role");
    if (role != "system" && role != "user" && role != "assistant")
      throw DataError("unknown role '" + role + "' in " + at + ".role", where,
                      "use system, user or assistant");
    out.push_back({role, field("content")});
  }
  return out;
}

std::vector<tokenizer::ChatMessage> parse_messages_line(const std::string& line,
                                                        const std::string& where) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded()) throw DataError("not valid JSON", where);
  if (j.is_object()) {
    if (!j.contains("messages")) throw DataError("missing field 'messages'", where);
    return parse_messages(j["messages"], where);
  }
  return parse_messages(j, where);
}

}  // namespace safetune::data
