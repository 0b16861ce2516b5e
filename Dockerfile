# syntax=docker/dockerfile:1
# runai container images.
#   GPU (default target):  docker build -t runai .
#   CPU only:              docker build --target runtime-cpu -t runai:cpu .
# Models are mounted read-only at /models; configuration comes from RUNAI_* variables.

# CUDA 13.0, the version CI compiles the `cuda` feature against (tools/cuda-toolchain.sh pins
# the same 13.0 update 1 from PyPI's wheels; deploy/check_static.py checks they agree) and the
# one the NVIDIA 580 drivers run. candle's kernels are PTX the driver compiles at load time,
# and a driver refuses PTX from a newer toolkit than its own.
ARG CUDA_VERSION=13.0.1
ARG UBUNTU_VERSION=22.04
ARG RUST_VERSION=1.95.0

# ---- build stage, CUDA ----------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu${UBUNTU_VERSION} AS build-cuda
ARG RUST_VERSION
# Compute capability to compile kernels for (80 = A100, 86 = RTX 30xx, 89 = RTX 40xx/L4, 90 = H100).
ARG CUDA_COMPUTE_CAP=86
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
ENV PATH=/root/.cargo/bin:${PATH}
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY assets ./assets
# Cargo.toml declares the criterion benches: their sources must exist for any build.
COPY benches ./benches
RUN cargo build --release --locked --features cuda,cudnn && cp target/release/runai /usr/local/bin/runai

# ---- runtime stage, CUDA ----------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu${UBUNTU_VERSION} AS runtime-cuda
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin runai
COPY --from=build-cuda /usr/local/bin/runai /usr/local/bin/runai
COPY config/default.toml /etc/runai/default.toml
ENV RUNAI_CONFIG=/etc/runai/default.toml \
    RUNAI_HOST=0.0.0.0 \
    RUNAI_PORT=50006 \
    RUNAI_MODEL_BASE_PATH=/models \
    RUNAI_DEVICE=cuda \
    RUNAI_HTTP_PORT=7860 \
    RUST_LOG=info
USER runai
# 50006: the RunAI socket protocol (Krita); 7860: the A1111 / OpenAI HTTP API.
EXPOSE 50006 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["runai", "client", "--host", "127.0.0.1", "--port", "50006", "ping"]
ENTRYPOINT ["runai"]

# ---- build stage, CPU -------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build-cpu
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY assets ./assets
COPY benches ./benches
RUN cargo build --release --locked && cp target/release/runai /usr/local/bin/runai

# ---- runtime stage, CPU -----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime-cpu
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin runai
COPY --from=build-cpu /usr/local/bin/runai /usr/local/bin/runai
COPY config/default.toml /etc/runai/default.toml
ENV RUNAI_CONFIG=/etc/runai/default.toml \
    RUNAI_HOST=0.0.0.0 \
    RUNAI_PORT=50006 \
    RUNAI_MODEL_BASE_PATH=/models \
    RUNAI_HTTP_PORT=7860 \
    RUST_LOG=info
USER runai
EXPOSE 50006 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["runai", "client", "--host", "127.0.0.1", "--port", "50006", "ping"]
ENTRYPOINT ["runai"]

# The last stage is the default target: the GPU image.
FROM runtime-cuda AS runtime
