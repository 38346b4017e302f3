// Writing SVG by hand, one way for every chart (the safety report's, the compare plot): elements
// from attribute lists, text escaped once. Library-internal; callers format their own numbers.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace safetune::svg {

// Attribute name and value (the value as it is to appear, before escaping).
using Attrs = std::vector<std::pair<std::string, std::string>>;

// & < > " ' as entities (what HTML and XML text need alike); nothing dropped.
std::string escape_entities(std::string_view text);
// Text for SVG content or attributes: escape_entities, and the control characters XML 1.0 forbids
// (all below 0x20 but tab and newline) dropped.
std::string escape(std::string_view text);

// <name k="v" .../>
std::string element(std::string_view name, const Attrs& attrs);
// <name k="v" ...>content</name>; `content` is inserted as is (escape text first).
std::string element(std::string_view name, const Attrs& attrs, std::string_view content);

// The root element: <svg xmlns=... width="W" height="H" viewBox="0 0 W H" k="v"...>, then a
// newline.
std::string open(const std::string& width, const std::string& height, const Attrs& attrs = {});
inline std::string close() { return "</svg>\n"; }

}  // namespace safetune::svg
