#!/usr/bin/env python3
"""Static checks of the deployment files, for machines without a Docker engine or systemd.

Parses docker-compose.yml and checks what a deployment relies on (GPU reservation, restart
policy, read-only model mount, port, env file); checks the Dockerfile's stages, non-root user
and HEALTHCHECK; checks the systemd unit's key settings. Exits non-zero on the first failure.
"""
import configparser
import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def compose():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc.get("services", {})
    gpu = services.get("runai", {})
    cpu = services.get("runai-cpu", {})
    check(bool(gpu) and bool(cpu), "compose defines services runai (GPU) and runai-cpu")
    for name, svc in (("runai", gpu), ("runai-cpu", cpu)):
        check(svc.get("restart") == "unless-stopped", f"{name}: restart unless-stopped")
        check("50006:50006" in svc.get("ports", []), f"{name}: publishes port 50006")
        vols = svc.get("volumes", [])
        check(any(v.endswith(":/models:ro") and "stablediffusion" in v for v in vols),
              f"{name}: ~/stablediffusion mounted read-only at /models")
        env = svc.get("environment", {})
        check(env.get("RUNAI_HOST") == "0.0.0.0", f"{name}: binds 0.0.0.0 inside the container")
        check("RUNAI_ALLOW" in env, f"{name}: has an allow-list example")
        check(any(e.get("path", "").endswith("runai.env") for e in svc.get("env_file", [])),
              f"{name}: token comes from an env file")
    devices = gpu.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    check(any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices),
          "runai: reserves an NVIDIA GPU")
    check("gpu" not in str(cpu.get("deploy", "")), "runai-cpu: reserves no GPU")
    check(cpu.get("profiles") == ["cpu"], "runai-cpu: behind the 'cpu' profile")
    check("profiles" not in gpu, "runai: starts with a plain `docker compose up`")


def dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)
    for s in ("build-cuda", "runtime-cuda", "build-cpu", "runtime-cpu"):
        check(s in stages, f"Dockerfile has stage {s}")
    check("--features cuda,cudnn" in text, "Dockerfile builds the CUDA stage with cuda,cudnn")
    cuda_version()
    check(re.search(r"^USER\s+runai", text, re.M) is not None, "Dockerfile runs as non-root user")
    check("HEALTHCHECK" in text and "ping" in text, "Dockerfile has a ping HEALTHCHECK")
    check("EXPOSE 50006" in text, "Dockerfile exposes 50006")
    copied = set()
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        for src in line.split()[:-1]:
            copied.add(src.rstrip("/"))
            check((ROOT / src).exists(), f"Dockerfile COPY source exists: {src}")
    # Cargo refuses to build at all when a declared target's source is missing, so every
    # declared bin/bench/test/example must be inside the build context the Dockerfile copies.
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    defaults = {"bin": "src/bin", "bench": "benches", "test": "tests", "example": "examples"}
    for kind, folder in defaults.items():
        for target in manifest.get(kind, []):
            path = target.get("path", f"{folder}/{target['name']}.rs")
            top = path.split("/")[0]
            check(top in copied or path in copied,
                  f"Dockerfile copies the source of {kind} target {target['name']} ({path})")


def cuda_version():
    """The Dockerfile's CUDA base image is the CUDA version CI compiles the cuda feature
    against: tools/cuda-toolchain.sh's RUNAI_CUDA_VERSION and its pinned nvcc wheel."""
    docker = re.search(r"^ARG\s+CUDA_VERSION=(\d+)\.(\d+)\.\d+\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    toolchain = (ROOT / "tools" / "cuda-toolchain.sh").read_text()
    ci = re.search(r"^RUNAI_CUDA_VERSION=(\d+)\.(\d+)\s*$", toolchain, re.M)
    nvcc = re.search(r"nvidia-cuda-nvcc==(\d+)\.(\d+)\.", toolchain)
    check(docker is not None, "Dockerfile pins ARG CUDA_VERSION=X.Y.Z")
    check(ci is not None and nvcc is not None, "tools/cuda-toolchain.sh pins its CUDA version and nvcc")
    if docker and ci and nvcc:
        want = docker.groups()
        check(ci.groups() == want and nvcc.groups() == want,
              f"Dockerfile CUDA {'.'.join(want)} = CI's CUDA {'.'.join(ci.groups())} "
              f"(nvcc wheel {'.'.join(nvcc.groups())})")


def systemd():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "deploy" / "runai.service")
    svc = unit["Service"]
    check(svc.get("Restart") == "on-failure", "unit: Restart=on-failure")
    check(svc.get("DynamicUser") == "yes", "unit: dynamic user")
    check(svc.get("ProtectSystem") == "strict", "unit: no writable paths (ProtectSystem=strict)")
    check("ReadOnlyPaths" in svc, "unit: model roots read-only")
    check("MemoryMax" in svc and "LimitNOFILE" in svc, "unit: resource limits")
    check(svc.get("ExecStart", "").startswith("/usr/local/bin/runai"), "unit: runs runai")


compose()
dockerfile()
systemd()
if failures:
    print(f"{len(failures)} deployment check(s) failed", file=sys.stderr)
    sys.exit(1)
print("deployment files: all static checks passed")
