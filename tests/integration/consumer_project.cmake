# CTest script: install safetune into the build tree, then configure, build and run
# examples/consumer against the installed package, as an integrator would; and run the installed
# `bin/safetune` from an environment without LD_LIBRARY_PATH, as a user of `make install` would.
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
# The installed tool must find libsafetune and LibTorch through its own RUNPATH.
set(clean_env ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH)
execute_process(COMMAND ${clean_env} "${prefix}/bin/safetune" --version
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "^safetune [0-9]")
  message(FATAL_ERROR "the installed safetune --version failed (${rc}):\n${out}\n${err}")
endif()
set(tiny "${SAFETUNE_HOME}/models/tiny-llama")
if(NOT EXISTS "${tiny}/config.json")
  message(FATAL_ERROR "no tiny model at ${tiny} (run scripts/bootstrap.sh)")
endif()
execute_process(COMMAND ${clean_env} "${prefix}/bin/safetune" forward "${tiny}" --ids 1,2,3
                RESULT_VARIABLE rc OUTPUT_VARIABLE installed_out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT installed_out MATCHES "top-5 next tokens after 3 input ids")
  message(FATAL_ERROR "the installed safetune forward failed (${rc}):\n${installed_out}\n${err}")
endif()
# Same logits as the build tree's tool: the installed binary runs the same library, not a stale one.
execute_process(COMMAND "${BINARY_DIR}/bin/safetune" forward "${tiny}" --ids 1,2,3
                RESULT_VARIABLE rc OUTPUT_VARIABLE build_out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT installed_out STREQUAL build_out)
  message(FATAL_ERROR "installed and build-tree forward differ:\n${installed_out}\nvs\n${build_out}\n${err}")
endif()
message(STATUS "consumer project built and ran against ${prefix}; installed bin/safetune ran without LD_LIBRARY_PATH")
