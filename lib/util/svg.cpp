// SVG elements as strings: attributes in the order given, values escaped.
#include "util/svg.hpp"

namespace safetune::svg {
namespace {
void append_attrs(std::string& s, const Attrs& attrs) {
  for (const auto& [k, v] : attrs) s += " " + k + "=\"" + escape(v) + "\"";
}
}  // namespace

std::string escape_entities(std::string_view text) {
  std::string o;
  o.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string escape(std::string_view text) {
  std::string kept(text);
  std::erase_if(
      kept, [](char c) { return static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n'; });
  return escape_entities(kept);
}

std::string element(std::string_view name, const Attrs& attrs) {
  std::string s = "<" + std::string(name);
  append_attrs(s, attrs);
  return s + "/>";
}

std::string element(std::string_view name, const Attrs& attrs, std::string_view content) {
  std::string s = "<" + std::string(name);
  append_attrs(s, attrs);
  return s + ">" + std::string(content) + "</" + std::string(name) + ">";
}

std::string open(const std::string& width, const std::string& height, const Attrs& attrs) {
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + escape(width) +
                  "\" height=\"" + escape(height) + "\" viewBox=\"0 0 " + escape(width) + " " +
                  escape(height) + "\"";
  append_attrs(s, attrs);
  return s + ">\n";
}

}  // namespace safetune::svg
