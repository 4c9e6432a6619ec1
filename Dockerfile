# syncd: a small image of `syncd serve` (SCIM, health, metrics, status, scheduled LDAP pulls).
# Build: docker build -t syncd .   Run: see deploy/README.md (compose for one host, Kustomize for a cluster).
# Dependencies come from requirements.lock (`make lock`), every file checked against its hash, wheels only: no
# compiler, no sdist built. The root filesystem can be read-only: only /var/lib/syncd (state) and /tmp are written.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
# /build holds the build tools (pip, the pinned setuptools); /opt/syncd gets only what syncd runs on
RUN python -m venv /build \
    && /build/bin/pip install --no-deps --require-hashes --only-binary=:all: -r requirements-build.lock \
    && python -m venv --without-pip /opt/syncd \
    && /build/bin/pip --python /opt/syncd/bin/python install --no-deps --require-hashes --only-binary=:all: \
       --no-compile -r requirements.lock
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY migrations ./migrations
# bytecode compiled once here (unchecked-hash: reproducible, never rewritten): a read-only root cannot cache it
RUN /build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /build/bin/pip --python /opt/syncd/bin/python install --no-deps --no-compile /wheels/syncd-*.whl \
    && /opt/syncd/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/syncd/lib

FROM python:3.11-slim
LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Keeps a LiteLLM proxy's users in step with SCIM identity providers and LDAP directories" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 syncd \
    && useradd --system --uid 10001 --gid syncd --home-dir /var/lib/syncd --create-home --shell /usr/sbin/nologin syncd
COPY --from=builder /opt/syncd /opt/syncd
COPY migrations /opt/syncd/migrations
ENV PATH="/opt/syncd/bin:${PATH}" \
    SYNCD_MIGRATIONS=/opt/syncd/migrations \
    SYNCD_CONFIG=/etc/syncd/syncd.yaml \
    SYNCD_HEALTH_PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/syncd
VOLUME ["/var/lib/syncd"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SYNCD_HEALTH_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["syncd"]
CMD ["serve", "--config", "/etc/syncd/syncd.yaml", "--host", "0.0.0.0", "--migrate"]
