#!/bin/sh
# Build etun._fast with clang, AddressSanitizer, UndefinedBehaviorSanitizer and libFuzzer coverage into build/fuzz/ (the normal build is untouched).
#
# build/fuzz/etun/ then holds the sanitized extension beside links to the Python sources, so
# PYTHONPATH=build/fuzz imports this etun instead of the normal one. The sanitizer runtimes come
# from atheris's wheel (asan_with_fuzzer.so, preloaded by fuzz/run.py), as atheris documents for
# native extensions: the extension only carries the instrumentation, never a runtime of its own.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CC=${FUZZ_CC:-clang-14}
OUT=build/fuzz
mkdir -p "$OUT/etun"
PYINC=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
SUFFIX=$($PY -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

echo "cython etun/_fast.pyx -> $OUT/_fast.c"
$PY -m cython -3 etun/_fast.pyx -o "$OUT/_fast.c"
# -O1 keeps the stack traces readable; recover=none makes every UBSan finding a crash the fuzzer keeps;
# function and vptr checks are C++ only.
echo "$CC (asan, ubsan, fuzzer-no-link) -> $OUT/etun/_fast$SUFFIX"
$CC -shared -fPIC -O1 -g -fno-omit-frame-pointer \
    -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize=function,vptr -fno-sanitize-recover=all \
    -Wno-deprecated-declarations -Wno-unused-function -Wno-unreachable-code-fallthrough \
    -I"$PYINC" -Ietun "$OUT/_fast.c" -lcrypto -o "$OUT/etun/_fast$SUFFIX.tmp"
mv "$OUT/etun/_fast$SUFFIX.tmp" "$OUT/etun/_fast$SUFFIX"
for f in etun/*.py; do
    ln -sf "../../../$f" "$OUT/etun/$(basename "$f")"
done
# tomli's wheel is compiled (mypyc): atheris sees no Python in it. The same release from source,
# pure Python, for the config target's coverage (only PYTHONPATH=build/fuzz/pure sees it).
TOMLI=$(sed -n 's/^tomli==//p' requirements-dev.txt)
if [ ! -f "$OUT/pure/tomli/_parser.py" ] || ! grep -q "^Version: $TOMLI\$" "$OUT"/pure/tomli-*.dist-info/METADATA 2>/dev/null; then
    echo "tomli==$TOMLI as pure Python -> $OUT/pure"
    rm -rf "$OUT/pure"
    $PY -m pip install -q --no-binary=tomli --no-deps --target "$OUT/pure" "tomli==$TOMLI"
fi
echo "sanitizer build ready: PYTHONPATH=$OUT:$OUT/pure"
