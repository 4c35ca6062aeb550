#!/usr/bin/env bash
# Enforces DESIGN.md's dependency rule on #include lines:
#   common/base       -> nothing in the repo but itself
#   common/<lib>      -> common/ only
#   <component>/      -> common/ and itself only
#   local/, e2e/      -> common/ only (they start components as processes)
#   bench/            -> common/ only
# and everywhere but common/: <component>/proto/*, the published API
# definitions (csi.proto, pluginregistration.proto, ...) that any client of
# the component may speak, as kubelet and the CSI sidecars do. Includes of
# generated headers (csi/proto/csi.grpc.pb.h) count as repo paths too: a
# target whose first folder is a folder of the repo is checked even when
# the file exists only in a build tree.
set -euo pipefail
root=${1:-.}
cd "$root"
status=0
while IFS= read -r -d '' file; do
  dir=${file%%/*}
  [[ $dir == common ]] && dir="common/$(cut -d/ -f2 <<<"$file")"
  while IFS= read -r inc; do
    target=${inc#\"}; target=${target%\"}
    top=${target%%/*}
    [[ $top == "$target" ]] && continue          # same-folder include
    [[ -d $top && $top != . ]] || continue       # not a repo path (system header)
    if [[ $dir != common/* && $target == */proto/* && ${target#*/} == proto/* ]]; then
      continue                                   # a component's published API definition
    fi
    case $dir in
      common/base) [[ $target == common/base/* ]] || { echo "$file: includes $target (common/base depends on nothing)"; status=1; } ;;
      common/*) [[ $top == common ]] || { echo "$file: includes $target (common/ depends only on common/)"; status=1; } ;;
      local|e2e|bench|tools) [[ $top == common ]] || { echo "$file: includes $target ($dir starts components as processes)"; status=1; } ;;
      *) [[ $top == common || $top == "$dir" ]] || { echo "$file: includes $target (a component depends on common/ only)"; status=1; } ;;
    esac
  done < <(grep -oE '^#include "[^"]+"' "$file" | sed 's/^#include //')
done < <(git ls-files -z --cached --others --exclude-standard -- '*.h' '*.cc' '*.c' 2>/dev/null || find . -name '*.h' -o -name '*.cc' -print0)
[[ $status == 0 ]] && echo "include rules: ok"
exit $status
