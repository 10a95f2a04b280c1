# The SDK worker image for arabic-pairs on a cluster: Apache Beam's own Python SDK image of the
# pinned Beam, with this project and its exact dependency set (constraints.txt) installed, so
# workers import `pipeline`, `translators` and `filters` and their native libraries
# (CTranslate2, SentencePiece, fastText, Pillow, lxml: all manylinux wheels) without a
# setup step at start-up. Dataflow takes it with `--sdk_container_image IMAGE`; Flink and Spark
# with `--environment_type DOCKER --environment_config IMAGE` (README, "Runners").
#
# Beam's boot program (/opt/apache/beam/boot, the base image's entry point) starts the worker:
# keep the entry point. The Beam and Python versions must be those of the launching
# environment, or the job fails at start-up.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/arabic-pairs:0.1.0 .
#   docker build --build-arg GPU=true -t .../arabic-pairs:0.1.0-gpu .   # translation on CUDA
#
# Written without a Docker engine at hand: it has not been built yet.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

ARG PYTHON_VERSION
ARG BEAM_VERSION
# true: add the CUDA 12 libraries CTranslate2 4.8 loads on a GPU (cuBLAS 12, cuDNN 9). The
# NVIDIA driver comes from the host (Dataflow: the `install-nvidia-driver` service option).
ARG GPU=false

RUN if [ "$GPU" = "true" ]; then \
        pip install --no-cache-dir "nvidia-cublas-cu12>=12.4,<13" "nvidia-cudnn-cu12>=9,<10"; \
    fi
# Where those wheels put their libraries; harmless when they are absent.
ENV NVIDIA_LIBS=/usr/local/lib/python${PYTHON_VERSION}/site-packages/nvidia
ENV LD_LIBRARY_PATH=${NVIDIA_LIBS}/cublas/lib:${NVIDIA_LIBS}/cudnn/lib:${LD_LIBRARY_PATH}

# The project with the versions it was tested with; apache-beam is pinned to the image's own.
WORKDIR /opt/arabic-pairs
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY translators ./translators
COPY filters ./filters
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import apache_beam, ctranslate2, sentencepiece, fasttext, pipeline.build; \
assert apache_beam.__version__ == '${BEAM_VERSION}', apache_beam.__version__"
