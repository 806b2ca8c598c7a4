#!/usr/bin/env bash
# Build llama-cpp-python (the embedded instructor's server) for THIS machine's advertised
# CPU features, never for "whatever the compiler can see", and install it into the venv.
#
# Why not a plain `pip install llama-cpp-python`: its default build sets GGML_NATIVE=ON,
# which compiles for every feature the CPU advertises, AMX included. Some Xeons advertise
# AMX and then fault on `tileloadd` (SIGILL on the first prompt longer than one token;
# ../shared/FACTS.md). We turn GGML_NATIVE off and switch on, by name, only the x86-64
# levels we have decided are safe: AVX/AVX2/FMA/F16C when advertised, AVX-512 (F, BW, VL,
# DQ, CD, plus VNNI) when advertised, AMX never. A CPU without AVX2 gets the SSE baseline.
#
# Why a wheel cache of our own: pip's wheel cache is keyed by the source link alone, not
# by CMAKE_ARGS, so a native build made earlier would be reused silently. Our key is the
# version plus the flag set; a shared home across different machines picks the right one.
set -euo pipefail
PIP=${1:?usage: build-llama-cpp.sh PATH/TO/pip}
VERSION=0.3.36
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2- || true)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }

args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
args+=" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
if [ "$(uname -m)" = x86_64 ]; then
  level=sse
  if has avx avx2 fma f16c; then
    level=avx2
    args+=" -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=$(has bmi2 && echo ON || echo OFF)"
    if has avx512f avx512bw avx512vl avx512dq avx512cd; then
      level=avx512
      args+=" -DGGML_AVX512=ON -DGGML_AVX512_VNNI=$(has avx512_vnni && echo ON || echo OFF)"
      args+=" -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_BF16=OFF"
    else
      args+=" -DGGML_AVX512=OFF"
    fi
    args+=" -DGGML_AVX_VNNI=$(has avx_vnni && echo ON || echo OFF)"
  else
    args+=" -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_AVX512=OFF"
  fi
else
  level=$(uname -m)   # other architectures: the portable defaults with NATIVE off
fi

key=$(printf '%s %s' "$VERSION" "$args" | sha1sum | cut -c1-10)
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/lai/wheels/llama-cpp-python-$VERSION-$level-$key"
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION for x86-64 level '$level' (no AMX, no -march=native); ~5 min, once" >&2
  tmp="$wheels.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  CMAKE_ARGS="$args" FORCE_CMAKE=1 "$PIP" wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$tmp" "llama-cpp-python==$VERSION"
  rm -rf "$wheels"; mv "$tmp" "$wheels"
  printf '%s\n' "$args" > "$wheels/CMAKE_ARGS"
fi
"$PIP" install -q --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
