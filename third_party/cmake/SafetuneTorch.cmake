# Finds LibTorch (from the bootstrap virtualenv's torch wheel unless Torch_DIR/CMAKE_PREFIX_PATH
# already point at one) and decides whether the CUDA kernels are built (SAFETUNE_WITH_CUDA).

set(SAFETUNE_HOME "$ENV{SAFETUNE_HOME}")
if(NOT SAFETUNE_HOME)
  set(SAFETUNE_HOME "$ENV{HOME}/.cache/safetune")
endif()
set(SAFETUNE_PYTHON "${SAFETUNE_HOME}/venv/bin/python" CACHE FILEPATH
    "Python interpreter whose torch provides LibTorch and the reference packages")
if(NOT EXISTS "${SAFETUNE_PYTHON}")
  find_program(_safetune_sys_python python3)
  if(_safetune_sys_python)
    set(SAFETUNE_PYTHON "${_safetune_sys_python}" CACHE FILEPATH "" FORCE)
  endif()
endif()

execute_process(
  COMMAND "${SAFETUNE_PYTHON}" -c
          "import torch;print(torch.utils.cmake_prefix_path);print(torch.__version__);print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _torch_info OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _torch_rc ERROR_QUIET)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "safetune: cannot import torch with ${SAFETUNE_PYTHON}. "
                      "Run scripts/bootstrap.sh (or `make bootstrap`) first, or pass -DSAFETUNE_PYTHON=...")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 _torch_prefix)
list(GET _torch_info 1 SAFETUNE_TORCH_VERSION)
list(LENGTH _torch_info _n)
set(SAFETUNE_TORCH_CUDA "")
if(_n GREATER 2)
  list(GET _torch_info 2 SAFETUNE_TORCH_CUDA)
endif()
list(PREPEND CMAKE_PREFIX_PATH "${_torch_prefix}")

# Decide on CUDA before find_package(Torch): its config needs the toolkit when torch has CUDA.
set(SAFETUNE_WITH_CUDA OFF)
include(CheckLanguage)
if(SAFETUNE_CUDA STREQUAL "ON" OR SAFETUNE_CUDA STREQUAL "AUTO")
  check_language(CUDA)
  if(NOT SAFETUNE_TORCH_CUDA)
    if(SAFETUNE_CUDA STREQUAL "ON")
      message(FATAL_ERROR "safetune: SAFETUNE_CUDA=ON but torch ${SAFETUNE_TORCH_VERSION} has no CUDA")
    endif()
  elseif(NOT CMAKE_CUDA_COMPILER)
    if(SAFETUNE_CUDA STREQUAL "ON")
      message(FATAL_ERROR "safetune: SAFETUNE_CUDA=ON but no nvcc was found")
    endif()
  else()
    set(SAFETUNE_WITH_CUDA ON)
  endif()
endif()

if(SAFETUNE_WITH_CUDA)
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(ENV{TORCH_CUDA_ARCH_LIST} "9.0")   # H100 / H200
  endif()
  set(SAFETUNE_TORCH_ARCH_LIST "$ENV{TORCH_CUDA_ARCH_LIST}")
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  enable_language(CUDA)
  # CMake 3.25 knows no CUDA20 dialect flags for nvcc; the kernels need only C++17.
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  string(REGEX MATCH "^[0-9]+" _nvcc_major "${CMAKE_CUDA_COMPILER_VERSION}")
  string(REGEX MATCH "^[0-9]+" _torch_cuda_major "${SAFETUNE_TORCH_CUDA}")
  if(NOT _nvcc_major STREQUAL _torch_cuda_major)
    message(FATAL_ERROR
      "safetune: nvcc is CUDA ${CMAKE_CUDA_COMPILER_VERSION} but torch ${SAFETUNE_TORCH_VERSION} "
      "was built for CUDA ${SAFETUNE_TORCH_CUDA}; the majors must match. Install the matching "
      "torch wheel (scripts/requirements.lock) or configure with -DSAFETUNE_CUDA=OFF.")
  endif()
  find_package(CUDAToolkit REQUIRED)
endif()

find_package(Torch REQUIRED)
# Torch's flags carry -D_GLIBCXX_USE_CXX11_ABI; keep them on our targets through TORCH_LIBRARIES.
message(STATUS "safetune: torch ${SAFETUNE_TORCH_VERSION} (CUDA ${SAFETUNE_TORCH_CUDA}), "
               "CUDA kernels: ${SAFETUNE_WITH_CUDA}")
