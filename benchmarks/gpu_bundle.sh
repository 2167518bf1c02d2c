#!/usr/bin/env bash
# Pack TVM for a lent GPU machine (Python 3.12, no network) into .gpu/, which gpu_session.sh unpacks.
#
# A call may carry 64 MiB. The apache-tvm wheel is 100 MB, almost all of it libtvm_compiler.so
# (259 MB raw): xz -9e takes that to 59.5 MB. CUTLASS headers, the web runtime and the C++
# sources are left out (a build here never uses them). Takes about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    -d "$work/whl" apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1
mkdir -p "$work/site" .gpu
for wheel in "$work"/whl/*.whl; do unzip -q -o "$wheel" -d "$work/site"; done
mv "$work/site/tvm/lib/libtvm_compiler.so" "$work/libtvm_compiler.so"
rm -rf "$work"/site/tvm/{3rdparty,web,src} "$work/site/tvm_ffi/3rdparty"
xz -9e -T0 -c "$work/libtvm_compiler.so" > .gpu/libtvm_compiler.so.xz
tar cf - -C "$work/site" . | xz -9e -T0 > .gpu/site-rest.tar.xz
du -ch .gpu/*
