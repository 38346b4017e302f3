// What a PEFT adapter directory's adapter_config.json says beyond the adapter itself (the adapter
// is loaded by ModelAdapters::load_peft, which reads the same file the same way).
#pragma once
#include <filesystem>
#include <string>

namespace safetune::lora {

// The base_model_name_or_path dir/adapter_config.json names ("" when it names none); IoError when
// the file is missing, FormatError naming it when it is not a JSON object.
std::string peft_base_model(const std::filesystem::path& dir);

}  // namespace safetune::lora
