# cerberus on a CUDA runtime: nuclei, glands, lumina and tissue types of whole slides.
#
#   docker build -t cerberus .
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v /data:/data cerberus \
#       segment /data/slides -o /data/out --device cuda
#
# Build arguments (see docs/container.md):
#   BASE         CUDA runtime base image; its CUDA version must match TORCH_INDEX.
#   TORCH_INDEX  package index of the torch build (a CUDA build for the GPU image).
#   TORCH_VERSION  torch version installed from TORCH_INDEX.
# The bundled model is package data of the wheel: the image needs no download at run time.

ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# --- builder: the wheel of this package and its dependency list -------------------------
FROM ${BASE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY cerberus_cli ./cerberus_cli
COPY models ./models
# requirements.txt: the package's dependencies except torch (installed from TORCH_INDEX).
# Its content, not the code, decides whether the runtime's dependency layer is rebuilt.
RUN /opt/build/bin/python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('torch')))" > /src/requirements.txt \
    && /opt/build/bin/python -m pip wheel --no-deps --wheel-dir /src/dist . \
    && /opt/build/bin/python -m zipfile -l /src/dist/cerberus_pathology-*.whl | grep -q "cerberus_cli/bundled/default.pt"

# --- runtime -------------------------------------------------------------------------------
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG APP_UID=1001
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH XDG_CACHE_HOME=/tmp/.cache
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --gid "${APP_UID}" cerberus \
    && useradd --create-home --uid "${APP_UID}" --gid "${APP_UID}" --shell /usr/sbin/nologin cerberus \
    && install -d -o "${APP_UID}" -g "${APP_UID}" /data
# Largest and least changing first: torch, then the dependencies, then the package.
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY --from=builder /src/requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=builder /src/dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/cerberus_pathology-*.whl && rm -rf /tmp/dist \
    && cerberus --version
USER ${APP_UID}:${APP_UID}
WORKDIR /data
ENTRYPOINT ["cerberus"]
CMD ["--help"]
