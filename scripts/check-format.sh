#!/usr/bin/env bash
# Checks the C++ sources against .clang-format: lists every file clang-format would change and
# exits 1 if there is one. `--fix` formats them in place instead. Run from anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "error: clang-format not found (scripts/bootstrap.sh installs it)" >&2; exit 2; }
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- 'lib/*.cpp' 'lib/*.hpp' 'lib/*.cu' 'lib/*.cuh' 'include/*.hpp' \
  'tests/*.cpp' 'tests/*.hpp' 'tools/*.cpp' 'tools/*.hpp' 'examples/*.cpp' 'examples/*.hpp' \
  'bench/*.cpp' 'bench/*.hpp')
if [[ "${1:-}" == "--fix" ]]; then
  clang-format -i --style=file "${files[@]}"
  exit 0
fi
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run -Werror --style=file "$f" >/dev/null 2>&1; then
    echo "not formatted: $f"
    bad=1
  fi
done
if ((bad)); then
  echo "run scripts/check-format.sh --fix (clang-format $(clang-format --version | grep -o '[0-9][0-9.]*' | head -1))" >&2
fi
exit $bad
