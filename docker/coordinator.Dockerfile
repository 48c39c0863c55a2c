# syntax=docker/dockerfile:1
# A Hydra Compute coordinator: the HTTPS service that keeps jobs and hands out chunks.
#
# Build from the repository's root:
#   docker build -f docker/coordinator.Dockerfile -t hydracompute-coordinator .
# Run:
#   docker run -d --name hydra-pool --hostname pool.example.org -p 8765:8765 \
#       -v hydra-data:/data hydracompute-coordinator
#   docker logs hydra-pool     # the join command for workers, the admin key, the CA fingerprint
# Its TLS certificate names the container's host name: set --hostname to the name workers
# use, or serve your own certificate (mount it and add `--cert FILE --key FILE`).
# Extra arguments are those of `hydracompute coordinator`, e.g. `--target-chunk-s 5`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin hydra \
    && mkdir /data && chown hydra:hydra /data && chmod 0700 /data

WORKDIR /opt/hydracompute
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /opt/hydracompute

USER hydra
WORKDIR /home/hydra
# The SQLite database, the admin key, join tokens, the session secret and the TLS
# authority: everything the pool must not lose.
ENV HYDRACOMPUTE_DATA_DIR=/data
VOLUME /data
EXPOSE 8765

# The health endpoint needs no credential; the certificate is the pool's own, hence no
# verification on this loopback check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import ssl, urllib.request; urllib.request.urlopen('https://127.0.0.1:8765/api/v1/health', context=ssl._create_unverified_context(), timeout=4)"]

ENTRYPOINT ["hydracompute", "coordinator", "--host", "0.0.0.0", "--port", "8765"]
CMD []
