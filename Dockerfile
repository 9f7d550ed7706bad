# One image for the API (`serve`, the default), the operator (`operator`) and the backup
# agent the operator's batch Jobs run (`backup --job ID --source /source`).
ARG PYTHON_VERSION=3.11

# Build: the project and its dependencies, pinned by the lock that `make test` installs
# too, into a virtualenv (all are wheels, so no compiler is needed here either). The
# dependencies are a layer of their own, before the source: a change of code alone
# rebuilds only the last one.
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY constraints.txt pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > dependencies.txt \
    && /opt/venv/bin/pip install --constraint constraints.txt --requirement dependencies.txt
COPY README.md LICENSE ./
COPY backup_operator ./backup_operator
COPY api ./api
COPY operator ./operator
RUN /opt/venv/bin/pip install --no-deps --constraint constraints.txt .

# Run: the virtualenv on a slim base, as a non-root user; works with a read-only root
# filesystem (nothing is written but to /tmp, which the chart mounts as an emptyDir).
FROM python:${PYTHON_VERSION}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="minio-backup-operator" \
      org.opencontainers.image.description="Kubernetes operator and REST service keeping the metadata of backups stored in MinIO" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/example/minio-backup-operator"
RUN groupadd --system --gid 10001 backup \
    && useradd --system --uid 10001 --gid backup --no-create-home --shell /usr/sbin/nologin backup
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["backup-operator"]
CMD ["serve"]
