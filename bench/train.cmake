# bench_train: one LoRA training step (safetune vs transformers + PEFT), kl_anchor overhead, and
# checkpoint loading (time, peak RSS) against safetensors / transformers. Not part of ctest.
add_executable(bench_train ${CMAKE_CURRENT_LIST_DIR}/bench_train.cpp)
target_link_libraries(bench_train PRIVATE safetune)
target_compile_definitions(bench_train PRIVATE
  SAFETUNE_BENCH_PYTHON="${SAFETUNE_PYTHON}"
  SAFETUNE_BENCH_HOME="${SAFETUNE_HOME}")
target_compile_options(bench_train PRIVATE -fPIC)
target_precompile_headers(bench_train REUSE_FROM safetune_pch)
set_target_properties(bench_train PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
