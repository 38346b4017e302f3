# bench_tokenizer: encoding throughput of safetune's tokenizer vs the `tokenizers` package.
add_executable(bench_tokenizer ${CMAKE_CURRENT_LIST_DIR}/bench_tokenizer.cpp)
target_link_libraries(bench_tokenizer PRIVATE safetune)
target_compile_options(bench_tokenizer PRIVATE -fPIC)
target_precompile_headers(bench_tokenizer REUSE_FROM safetune_pch)
set_target_properties(bench_tokenizer PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
target_compile_definitions(bench_tokenizer PRIVATE
  SAFETUNE_BENCH_PYTHON="${SAFETUNE_PYTHON}"
  SAFETUNE_BENCH_CORPUS="${PROJECT_SOURCE_DIR}/tests/data/tokenizer_corpus.txt"
  SAFETUNE_BENCH_TOKENIZER="${CMAKE_BINARY_DIR}/fixtures/tokenizer/smollm2/tokenizer.json")
