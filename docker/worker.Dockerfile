# syntax=docker/dockerfile:1
# A Hydra Compute volunteer worker.
#
# Build from the repository's root:
#   docker build -f docker/worker.Dockerfile -t hydracompute-worker .
# Run (the arguments are those of `hydracompute worker`; see docs/worker.md):
#   docker run -d --name hydra-worker \
#       -e HYDRACOMPUTE_JOIN_TOKEN=hcj_... \
#       -v hydra-worker:/home/hydra/.local/share/hydracompute \
#       hydracompute-worker https://pool.example.org:8765 --ca-fingerprint sha256:... \
#       --cpu-pause-percent 25 --max-temperature-c 85
# `docker stop` sends SIGTERM: the worker sends its results and gives back unfinished chunks.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin hydra

WORKDIR /opt/hydracompute
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /opt/hydracompute

USER hydra
WORKDIR /home/hydra
# The worker's identity (so a new container rejoins as the same worker), its status file,
# and the compiled kernels, kept across containers in one volume.
ENV NUMBA_CACHE_DIR=/home/hydra/.local/share/hydracompute/numba-cache
RUN mkdir -p /home/hydra/.local/share/hydracompute/numba-cache
VOLUME /home/hydra/.local/share/hydracompute

ENTRYPOINT ["hydracompute", "worker"]
CMD ["--help"]
