# shellcheck shell=bash
# The CUDA 13.0 toolchain from PyPI's NVIDIA wheels, for machines without a CUDA install:
# installs the pinned wheels into a cached virtual environment outside the repository, lays a
# toolkit-shaped folder over them (bin/, include/, lib64/ with the unversioned library names
# the linker wants) and exports what candle's and cudarc's build scripts read (PATH,
# CUDA_HOME/CUDA_PATH/CUDA_ROOT, CUDA_COMPUTE_CAP, LIBRARY_PATH, LD_LIBRARY_PATH).
# Sourced by .ci/cuda-check (profile `compile`) and bench/gpu.sh (profile `link`).
#
# usage: source tools/cuda-toolchain.sh [compile|link]
#   compile  nvcc, its front ends and the headers: enough to build candle's kernels and
#            type-check every CUDA path (`cargo check --features cuda,cudnn`). ~460 MB.
#   link     also the libraries a CUDA binary links and runs with (cudart, nvrtc, cublas,
#            cublasLt, curand, cudnn), and libcuda.so from the installed NVIDIA driver when
#            there is one. ~2.5 GB.
#   env: RUNAI_CUDA_CACHE (default ~/.cache/runai-ci), CUDA_COMPUTE_CAP (default 90: the H100
#        and H200; candle's kernels are compiled for this one architecture), PYTHON (python3),
#        CUDAFORGE_THREADS (parallel kernel compiles, default all cores).
#
# Why 13.0 and why every wheel is pinned (nvcc's own dependencies too): the GPU machines this
# project is lent run NVIDIA driver 580, which is CUDA 13.0. candle ships its kernels as PTX
# that the driver compiles at load time, and a driver refuses PTX from a newer toolkit
# ("Unsupported .version 9.5" for 13.5's PTX on a 13.0 driver). An unpinned
# `pip install nvidia-cuda-nvcc==13.0.88` still pulls the newest nvidia-nvvm (cicc) and
# nvidia-cuda-crt, which emit that newer PTX; so each wheel is named with its version and
# installed with --no-deps.

# Every wheel of CUDA 13.0 update 1 (the Dockerfile's base image) that the build needs.
RUNAI_CUDA_VERSION=13.0
RUNAI_CUDA_COMPILE_WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.88
    nvidia-cuda-cccl==13.0.85
)
RUNAI_CUDA_LINK_WHEELS=(
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
    nvidia-cudnn-cu13==9.21.1.3
)

runai_cuda_toolchain() {
    local profile=${1:-compile} py=${PYTHON:-python3} cache=${RUNAI_CUDA_CACHE:-$HOME/.cache/runai-ci}
    local wheels=("${RUNAI_CUDA_COMPILE_WHEELS[@]}")
    case $profile in
        compile) ;;
        link) wheels+=("${RUNAI_CUDA_LINK_WHEELS[@]}") ;;
        *)
            echo "cuda-toolchain.sh: unknown profile '$profile' (compile or link)" >&2
            return 2
            ;;
    esac
    # The folder's name changes with the pins, so a new pin never reuses a stale install.
    local key venv site
    key=$(printf '%s\n' "$($py -c 'import sys; print(sys.version_info[:2])')" "${wheels[@]}" |
        sha256sum | cut -c1-12)
    venv=$cache/cuda-$RUNAI_CUDA_VERSION-$profile-$key
    if [ ! -f "$venv/.complete" ]; then
        echo "cuda-toolchain: installing CUDA $RUNAI_CUDA_VERSION ($profile) into $venv" >&2
        rm -rf "$venv"
        mkdir -p "$cache"
        "$py" -m venv "$venv" || return 1
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
            "${wheels[@]}" || return 1
        site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        runai_cuda_lay_toolkit "$site/nvidia" "$venv/toolkit" || return 1
        touch "$venv/.complete"
    else
        echo "cuda-toolchain: reusing $venv" >&2
    fi
    local tk=$venv/toolkit
    runai_cuda_link_driver "$tk/lib64"
    export CUDA_HOME=$tk CUDA_PATH=$tk CUDA_ROOT=$tk
    export PATH=$tk/bin:$PATH
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
    # candle's build script compiles its kernels on half the cores unless told (cudaforge).
    export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
    export LIBRARY_PATH=$tk/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}
    export LD_LIBRARY_PATH=$tk/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    nvcc --version | tail -2 >&2
}

# A toolkit-shaped folder over the wheels' nvidia/cu13 tree (and cudnn's own tree): bin/,
# nvvm/ and include/ as the wheels lay them (nvcc.profile finds nvvm/ and include/cccl
# relative to bin/), lib64/ with every shared library under its unversioned name too.
runai_cuda_lay_toolkit() { # NVIDIA_SITE_DIR TOOLKIT_DIR
    local src=$1/cu13 tk=$2 lib base
    [ -x "$src/bin/nvcc" ] || {
        echo "cuda-toolchain: no nvcc in $src/bin" >&2
        return 1
    }
    mkdir -p "$tk/lib64"
    ln -s "$src/bin" "$tk/bin"
    ln -s "$src/nvvm" "$tk/nvvm"
    ln -s "$src/include" "$tk/include"
    for lib in "$src"/lib/lib*.so.* "$1"/cudnn/lib/lib*.so.*; do
        [ -e "$lib" ] || continue
        base=$(basename "$lib")
        ln -sf "$lib" "$tk/lib64/$base"
        ln -sf "$lib" "$tk/lib64/${base%%.so.*}.so"
    done
}

# libcuda.so is the driver's, never a wheel's: link the installed driver's libcuda.so.1 under
# the unversioned name the linker asks for. Nothing to do on a machine without a driver.
runai_cuda_link_driver() { # LIB_DIR
    local drv
    drv=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ {print $NF; exit}')
    if [ -z "$drv" ]; then
        for drv in /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 ""; do
            [ -e "$drv" ] && break
        done
    fi
    if [ -n "$drv" ]; then
        ln -sf "$drv" "$1/libcuda.so"
    fi
}

runai_cuda_toolchain "$@"
