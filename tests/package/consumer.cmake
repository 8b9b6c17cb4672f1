# Included by every consumer that tests/package/run.sh generates, after the README's block: checks
# that the block brought workerpool in the way run.sh expects, and that workerpool behaved as a
# guest. my_app (main.cpp) is defined before the block, since the block links it.

if(NOT TARGET workerpool::workerpool)
  message(FATAL_ERROR "workerpool::workerpool is not defined")
endif()

# run.sh says which way in this build must have taken.
if(EXPECT_FETCHED)  # FetchContent cloned the repository into this build's _deps
  string(FIND "${workerpool_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/_deps/" at)
  if(workerpool_FOUND OR NOT at EQUAL 0)
    message(FATAL_ERROR "expected FetchContent to fetch workerpool into ${CMAKE_BINARY_DIR}/_deps, "
                        "got SOURCE_DIR='${workerpool_SOURCE_DIR}' DIR='${workerpool_DIR}'")
  endif()
endif()
if(EXPECT_SOURCE_DIR)
  if(workerpool_FOUND OR NOT workerpool_SOURCE_DIR STREQUAL EXPECT_SOURCE_DIR)
    message(FATAL_ERROR "expected workerpool from ${EXPECT_SOURCE_DIR}, got "
                        "SOURCE_DIR='${workerpool_SOURCE_DIR}' DIR='${workerpool_DIR}'")
  endif()
endif()
if(EXPECT_PREFIX)  # find_package (or FetchContent's FIND_PACKAGE_ARGS) found the install
  string(FIND "${workerpool_DIR}" "${EXPECT_PREFIX}/" at)
  if(NOT workerpool_FOUND OR NOT at EQUAL 0)
    message(FATAL_ERROR "expected find_package to find workerpool under ${EXPECT_PREFIX}, got "
                        "DIR='${workerpool_DIR}' SOURCE_DIR='${workerpool_SOURCE_DIR}'")
  endif()
  message(STATUS "found workerpool ${workerpool_VERSION} in ${workerpool_DIR}")
endif()

# SameMinorVersion: an install of 0.1.x must not satisfy a request for 0.2 or 1.0.
function(workerpool_check_wrong_versions)
  foreach(wrong IN ITEMS 0.2 1.0)
    find_package(workerpool ${wrong} QUIET)
    if(workerpool_FOUND)
      message(FATAL_ERROR "find_package(workerpool ${wrong}) accepted version ${workerpool_VERSION}")
    endif()
  endforeach()
endfunction()
if(CHECK_WRONG_VERSIONS)
  workerpool_check_wrong_versions()
endif()

# A guest adds no tests, dev-flag target or other targets of its own to its host's build.
foreach(target IN ITEMS workerpool_dev_flags workerpool_unit_tests workerpool_header_check)
  if(TARGET ${target})
    message(FATAL_ERROR "workerpool added its internal target ${target} to a consumer's build")
  endif()
endforeach()
# Our warnings and sanitizers must never reach a user through the library target.
get_target_property(workerpool_options workerpool::workerpool INTERFACE_COMPILE_OPTIONS)
if(workerpool_options)
  message(FATAL_ERROR "workerpool::workerpool carries compile options: ${workerpool_options}")
endif()

# No CMAKE_CXX_STANDARD here: the library's cxx_std_20 compile feature must bring C++20 along.
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(my_app PRIVATE -Wall -Wextra -Wpedantic -Werror)
endif()

# workerpool::redis comes along wherever hiredis is found (run.sh says whether it is here).
if(EXPECT_REDIS AND NOT TARGET workerpool::redis)
  message(FATAL_ERROR "hiredis is installed but workerpool::redis is not defined")
endif()
if(TARGET workerpool::redis)
  add_executable(redis_consumer "${CMAKE_CURRENT_LIST_DIR}/redis_main.cpp")
  target_link_libraries(redis_consumer PRIVATE workerpool::redis)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(redis_consumer PRIVATE -Wall -Wextra -Wpedantic -Werror)
  endif()
endif()
