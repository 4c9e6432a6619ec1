# syncd: a small image of `syncd serve` (SCIM, health, metrics, status, scheduled LDAP pulls).
# Build: docker build -t syncd .   Run: see deploy/docker-compose.yml (config mounted, secrets from the environment).

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/syncd
COPY pyproject.toml README.md ./
COPY syncd ./syncd
RUN /opt/syncd/bin/pip install --no-cache-dir . \
    && find /opt/syncd -name "__pycache__" -type d -prune -exec rm -rf {} +

FROM python:3.11-slim
LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Keeps a LiteLLM proxy's users in step with SCIM identity providers and LDAP directories"
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
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SYNCD_HEALTH_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["syncd"]
CMD ["serve", "--config", "/etc/syncd/syncd.yaml", "--host", "0.0.0.0", "--migrate"]
