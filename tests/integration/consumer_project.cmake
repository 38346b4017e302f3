# CTest script: install safetune into the build tree, then configure, build and run
# examples/consumer against the installed package, as an integrator would.
set(prefix "${BINARY_DIR}/_install")
set(work "${BINARY_DIR}/consumer")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BINARY_DIR}" --prefix "${prefix}"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
execute_process(
  COMMAND "${SAFETUNE_PYTHON}" -c "import torch;print(torch.utils.cmake_prefix_path)"
  OUTPUT_VARIABLE torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cannot locate torch with ${SAFETUNE_PYTHON}")
endif()
set(cuda_args)
if(SAFETUNE_CUDA STREQUAL "OFF")
  set(cuda_args -DCAFFE2_USE_CUDNN=OFF)
endif()
# Configure once; later runs only build (the generated build re-runs CMake by itself when the
# installed package's config files change, and relinks when the installed library changes).
if(NOT EXISTS "${work}/CMakeCache.txt")
  execute_process(
    COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples/consumer" -B "${work}" -G "${GENERATOR}"
            "-DCMAKE_PREFIX_PATH=${prefix};${torch_prefix}" -DCMAKE_BUILD_TYPE=Release ${cuda_args}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    file(REMOVE "${work}/CMakeCache.txt")
    message(FATAL_ERROR "configuring the consumer failed:\n${out}\n${err}")
  endif()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${work}" RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the consumer failed:\n${out}\n${err}")
endif()
execute_process(COMMAND "${work}/consumer" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "rank: 5")
  message(FATAL_ERROR "the consumer program failed (${rc}):\n${out}\n${err}")
endif()
message(STATUS "consumer project built and ran against ${prefix}")
