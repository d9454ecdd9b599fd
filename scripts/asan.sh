#!/usr/bin/env bash
# Build the C++ extension with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch copy of the tree and run
# the CPU tests against it. Python itself is not instrumented, so libasan is preloaded and leak detection (which
# would report the interpreter's own allocations) is off; UBSan findings abort the run.
# Usage: scripts/asan.sh [pytest args]   (default: the CPU tests, without the slow large-tensor test)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$src/setup.py" "$src/pyproject.toml" "$src/csrc" "$src/fastnn" "$src/tests" "$src/docs" "$src/bench" "$work/"
rm -f "$work"/fastnn/_C*.so
cd "$work"
if ! FASTNN_EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1" \
    python setup.py -q build_ext --inplace > build.log 2>&1; then
    cat build.log; echo "asan.sh: the sanitizer build failed"; exit 1
fi
# libstdc++ too: Python does not link it, and ASan's __cxa_throw interceptor finds no real __cxa_throw unless the
# library is there at start-up - every C++ exception (a ValueError from the extension) would abort the run.
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$work"
# ASan keeps freed memory in quarantine, so the resident-memory leak test does not apply here.
if [ $# -eq 0 ]; then set -- -q -m "not slow and not gpu" -k "not cuda and not no_leaks" tests/; fi
# Make sure the tests load the instrumented extension, not an installed one.
python -c "import fastnn._C as C, sys; sys.exit(0 if C.__file__.startswith('$work') else 'asan.sh: loaded ' + C.__file__)"
python -m pytest -p no:cacheprovider "$@"
