# Writes OUT (a C++ source defining trellis::base::buildInfo()) from git's
# view of SRC. Run at every build; the file is rewritten only when the
# commit or the tree state changed, so an unchanged tree rebuilds nothing.
execute_process(COMMAND git -C ${SRC} rev-parse HEAD OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE rc ERROR_QUIET)
set(state "")
if(NOT rc EQUAL 0)
  set(commit "")
else()
  execute_process(COMMAND git -C ${SRC} status --porcelain --untracked-files=no OUTPUT_VARIABLE changes
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(changes STREQUAL "")
    set(state "clean")
  else()
    set(state "dirty")
  endif()
endif()
set(key "// ${commit} ${state}")
if(EXISTS ${OUT})
  file(STRINGS ${OUT} first LIMIT_COUNT 1)
  if(first STREQUAL key)
    return()
  endif()
endif()
string(TIMESTAMP date "%Y-%m-%dT%H:%M:%SZ" UTC)
file(WRITE ${OUT} "${key}
#include \"common/base/build_info.h\"

namespace trellis::base {

const BuildInfo& buildInfo() {
  static const BuildInfo info{\"${commit}\", \"${state}\", \"${date}\"};
  return info;
}

}  // namespace trellis::base
")
