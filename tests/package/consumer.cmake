# Shared by the three consumers: checks that workerpool behaved as a guest, then builds main.cpp.

if(NOT TARGET workerpool::workerpool)
  message(FATAL_ERROR "workerpool::workerpool is not defined")
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
add_executable(consumer "${CMAKE_CURRENT_LIST_DIR}/main.cpp")
target_link_libraries(consumer PRIVATE workerpool::workerpool)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(consumer PRIVATE -Wall -Wextra -Wpedantic -Werror)
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
