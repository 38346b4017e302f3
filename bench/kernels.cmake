# bench_kernels: the fused LoRA merge and forward/backward against the naive ATen way and PEFT.
# Included from bench/CMakeLists.txt; not part of ctest (timing never lives in a test).
add_executable(bench_kernels ${CMAKE_CURRENT_LIST_DIR}/bench_kernels.cpp)
target_link_libraries(bench_kernels PRIVATE safetune)
target_compile_definitions(bench_kernels PRIVATE SAFETUNE_BENCH_PYTHON="${SAFETUNE_PYTHON}")
target_compile_options(bench_kernels PRIVATE -fPIC)
target_precompile_headers(bench_kernels REUSE_FROM safetune_pch)
set_target_properties(bench_kernels PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
