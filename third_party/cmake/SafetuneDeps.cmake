# The Debian-packaged dependencies. Each becomes a target; the find logic for the ones without
# CMake config files lives in this folder.
find_package(Threads REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(CURL REQUIRED)   # the HTTP judge (Debian libcurl4-openssl-dev)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(ICU_UC REQUIRED IMPORTED_TARGET icu-uc)   # NFC for tokenizers
# Stable local names, so a different provider can be swapped in here only.
add_library(safetune_pcre2 INTERFACE)
target_link_libraries(safetune_pcre2 INTERFACE PkgConfig::PCRE2)
add_library(safetune_sentencepiece INTERFACE)
target_link_libraries(safetune_sentencepiece INTERFACE PkgConfig::SENTENCEPIECE)
add_library(safetune_icu INTERFACE)
target_link_libraries(safetune_icu INTERFACE PkgConfig::ICU_UC)
install(TARGETS safetune_pcre2 safetune_sentencepiece safetune_icu EXPORT safetuneTargets)
