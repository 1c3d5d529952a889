# segtrain in a container, run as the original plugin-training-fcn image was:
#   docker build -t segtrain .                                     # CPU
#   docker build -t segtrain:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker run --rm --gpus all --shm-size 8G -v ROOT:/data segtrain:cuda --config config.list --image_type waggle_cloud
# BASE_IMAGE may be any image with Python >= 3.10 and pip; the CUDA wheels bring their own CUDA
# libraries, so the host only needs the NVIDIA driver and container toolkit.
ARG BASE_IMAGE=python:3.12-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/opt/torch

WORKDIR /opt/segtrain
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && mkdir -p /opt/torch && chmod 1777 /opt/torch

COPY pyproject.toml README.md ./
COPY segtrain ./segtrain
RUN pip install --no-cache-dir .

COPY docker/entrypoint.sh /usr/local/bin/segtrain-entrypoint

# The data folder (images, labels, class_names.list, config.list) is mounted here; outputs are
# written back into it as MODEL-<output_dir>/. Run with --user "$(id -u):$(id -g)" to own them.
VOLUME ["/data"]
WORKDIR /data
ENTRYPOINT ["segtrain-entrypoint"]
