# efspurge container image: wheels are built in one stage and installed into a clean runtime
# stage, so no compiler, wheel or pip cache is left in the image.
#
# The base image is pinned by digest, in literal FROM lines so that dependabot's docker
# ecosystem can update both (an image set through an ARG is invisible to it). The digest is
# the multi-arch index of python:3.12-slim; check it with
#   docker buildx imagetools inspect python:3.12-slim
# The dependencies are installed from requirements-image.txt, pinned with hashes (see
# CONTRIBUTING.md for how to regenerate it), so a rebuild gets the same files.
FROM python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea AS build
WORKDIR /src
# The dependencies first (their layer survives source changes); pip checks every hash.
COPY requirements-image.txt ./
RUN pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements-image.txt
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea
# The package version (efspurge.__version__); the release workflow passes the tag's version.
ARG VERSION=2.0.0
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
# Installed from the wheels built above only (--no-index): the locked dependencies with their
# hashes checked again, then efspurge itself, then `pip check` that they fit together. The
# wheel directory and the lock are bind mounts, so nothing of them stays in this layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements-image.txt,target=/tmp/requirements-image.txt \
    pip install --no-cache-dir --no-index --find-links=/wheels --require-hashes \
      -r /tmp/requirements-image.txt \
 && pip install --no-cache-dir --no-index --no-deps /wheels/efspurge-*.whl \
 && pip check
USER 10001:10001
ENTRYPOINT ["efspurge"]
CMD ["--help"]
