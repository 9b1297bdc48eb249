# efspurge container image: build a wheel in one stage, install it into a clean runtime stage.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# Wheels for the project and its dependencies (psutil ships manylinux wheels for amd64 and
# arm64, so no compiler is needed in either stage).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
ARG VERSION=1.0.0
ARG SOURCE=https://github.com/efspurge/efspurge
LABEL org.opencontainers.image.title="efspurge" \
      org.opencontainers.image.description="Delete files older than a given age from very large directory trees on EFS/NFS and local disks" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed non-root user: uid/gid 10001, matching the Kubernetes and ECS examples.
RUN groupadd --system --gid 10001 efspurge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin efspurge
# Installed from the wheels built above only (--no-index); the wheel directory is a bind
# mount of the build stage, so nothing of it stays in this layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/efspurge-*.whl
USER 10001:10001
ENTRYPOINT ["efspurge"]
CMD ["--help"]
