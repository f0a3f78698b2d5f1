#!/usr/bin/env bash
# Shrink the GPU bundle in .gpu/ (made by the shared make-bundle script: spconv-cu124 + cumm-cu124)
# by replacing cumm's NVRTC libraries with a stub (tools/gpu/nvrtc_stub.c: why, and what happens
# if a GPU ever needs them). Saves ~17 MB of the 64 MiB one device call may carry, which is what
# lets a call carry a checkpoint to resume from. Run from the repo root; keeps the full archive as
# .gpu_init/cumm_cu124.full.tar.xz (git-excluded, outside the carried .gpu/).
#   bash tools/gpu/slim_bundle.sh
set -euo pipefail
src=.gpu/cumm_cu124.tar.xz
[ -f "$src" ] || { echo "no $src: build the bundle first" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar -xJf "$src" -C "$tmp"
lib=$(ls "$tmp"/cumm_cu124.libs/libnvrtc-[0-9a-f]*.so.* | grep -v builtins)
builtins=$(ls "$tmp"/cumm_cu124.libs/libnvrtc-builtins-*.so.*)
gcc -shared -fPIC -O2 -o "$lib" -Wl,-soname,"$(basename "$lib")" -Wl,--version-script=tools/gpu/nvrtc_stub.map \
  tools/gpu/nvrtc_stub.c
echo 'void bqnet_nvrtc_builtins_stub(void) {}' > "$tmp/b.c"
gcc -shared -fPIC -O2 -o "$builtins" -Wl,-soname,"$(basename "$builtins")" "$tmp/b.c"; rm "$tmp/b.c"
# every nvrtc symbol cumm imports must resolve in the stub, with its version
need=$(readelf --dyn-syms -W "$tmp"/cumm/core_cc.*.so | awk '$7 == "UND" && $8 ~ /^nvrtc/ {sub(/@.*/, "", $8); print $8}' | sort -u)
have=$(readelf --dyn-syms -W "$lib" | awk '$7 != "UND" && $8 ~ /^nvrtc.*@libnvrtc.so.12/ {sub(/@.*/, "", $8); print $8}' | sort -u)
missing=$(comm -23 <(echo "$need") <(echo "$have"))
[ -z "$missing" ] || { echo "stub lacks: $missing" >&2; exit 1; }
mkdir -p .gpu_init; [ -f .gpu_init/cumm_cu124.full.tar.xz ] || cp "$src" .gpu_init/cumm_cu124.full.tar.xz
tar -C "$tmp" -cf - . | xz -9 -T2 > "$src"
du -b "$src" .gpu
