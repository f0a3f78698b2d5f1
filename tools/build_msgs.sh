#!/usr/bin/env bash
# Generate the bqnet_ros messages (package bqnet_ros_interfaces) from PyPI wheels, no ROS install.
#
#   tools/build_msgs.sh             install requirements/msgs.txt into the venv, build, self-test
#   tools/build_msgs.sh --no-pip    the same without touching the venv
#   tools/build_msgs.sh --print-env only print the exports for the built messages
#
# Builds interfaces/bqnet_ros_interfaces with CMake into build/msgs/build and installs it into
# build/msgs/install (both git-ignored). The libraries carry a relative RUNPATH, so the install
# folder may move. bqnet_ros.interfaces finds build/msgs/install by itself; other programs use
# the printed PYTHONPATH / LD_LIBRARY_PATH / AMENT_PREFIX_PATH. In a sourced ROS 2 colcon
# workspace, build the package with colcon instead (msg/README.md).
# Env: VENV (default .venv), BQNET_MSGS_PREFIX (default build/msgs), JOBS (default 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
PREFIX="${BQNET_MSGS_PREFIX:-build/msgs}"
mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
INSTALL="$PREFIX/install"
JOBS="${JOBS:-2}"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
SITE="$INSTALL/lib/python$PYVER/site-packages"

print_env() {
  echo "export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH}"
  echo "export LD_LIBRARY_PATH=$INSTALL/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  echo "export AMENT_PREFIX_PATH=$INSTALL:$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
}

PIP=1
case "${1:-}" in
  --print-env) print_env; exit 0 ;;
  --no-pip) PIP=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-pip | --print-env]" >&2; exit 2 ;;
esac

command -v cmake >/dev/null || { echo "[msgs] cmake not found (apt-get install cmake g++)" >&2; exit 1; }
command -v c++ >/dev/null || { echo "[msgs] no C++ compiler found (apt-get install g++)" >&2; exit 1; }

start=$(date +%s.%N)
if [ "$PIP" = 1 ]; then
  echo "[msgs] installing requirements/msgs.txt into $VENV"
  "$PY" -m pip install --disable-pip-version-check -q -r requirements/msgs.txt
fi

# The wheels install their CMake configs into the venv prefix (venv/share/<pkg>/cmake).
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
if [ -f "$PREFIX/build/CMakeCache.txt" ] && ! grep -q "CMAKE_INSTALL_PREFIX:PATH=$INSTALL\$" "$PREFIX/build/CMakeCache.txt"; then
  rm -rf "$PREFIX/build"  # configured for another prefix (moved checkout)
fi
if [ -f "$PREFIX/build/CMakeCache.txt" ]; then GEN=(); fi  # keep the generator it was made with
echo "[msgs] configuring interfaces/bqnet_ros_interfaces -> $PREFIX"
cmake -S interfaces/bqnet_ros_interfaces -B "$PREFIX/build" "${GEN[@]}" \
  -DCMAKE_INSTALL_PREFIX="$INSTALL" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$PY" \
  '-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..' \
  > "$PREFIX/configure.log" 2>&1 || { tail -40 "$PREFIX/configure.log" >&2; echo "[msgs] configure failed: $PREFIX/configure.log" >&2; exit 1; }
echo "[msgs] building ($JOBS jobs)"
cmake --build "$PREFIX/build" -j "$JOBS" > "$PREFIX/build.log" 2>&1 \
  || { tail -40 "$PREFIX/build.log" >&2; echo "[msgs] build failed: $PREFIX/build.log" >&2; exit 1; }
cmake --install "$PREFIX/build" > "$PREFIX/install.log" 2>&1 \
  || { tail -20 "$PREFIX/install.log" >&2; echo "[msgs] install failed" >&2; exit 1; }
end=$(date +%s.%N)
echo "[msgs] built in $("$PY" -c "print(f'{$end - $start:.1f}')") s"

# Self-test: import through bqnet_ros.interfaces (the path the node uses) and round-trip one message.
BQNET_MSGS_PREFIX="$PREFIX" "$PY" - <<'PYEOF'
from rclpy.serialization import deserialize_message, serialize_message
from bqnet_ros.interfaces import load_interfaces
msgs = load_interfaces(required=True)
m = msgs.ReferringSegmentation(text="self test", found=True, point_indices=[3, 1])
m.objects = [msgs.ReferredObject(score=0.5, num_points=2, point_indices=[1, 3])]
back = deserialize_message(serialize_message(m), msgs.ReferringSegmentation)
assert back.text == "self test" and list(back.objects[0].point_indices) == [1, 3]
print(f"[msgs] self-test ok: {msgs.source}")
PYEOF
echo "[msgs] to use the messages outside bqnet_ros (bqnet_ros finds them by itself):"
print_env
