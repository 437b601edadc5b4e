# iterbin with the CUDA backend, for nvidia-docker:
#
#   docker build -t iterbin .
#   docker run --gpus all -v /path/to/imagenet:/data -v "$PWD/runs:/runs" iterbin \
#       run experiments/imagenet/resnet18-forward.toml
#
# /path/to/imagenet holds train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (or a folder
# made by `iterbin data pack`). Runs are written to /runs.

# Build stage: a CUDA 12 devel image has cuda.h and the libcuda link stub; the
# binary is built by the same Makefile target CI runs (make build-cuda).
FROM nvidia/cuda:12.4.1-devel-ubuntu22.04 AS build
ARG GO_VERSION=1.26.8
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl gcc make \
    && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL "https://go.dev/dl/go${GO_VERSION}.linux-amd64.tar.gz" | tar -C /usr/local -xz
ENV PATH=/usr/local/go/bin:$PATH \
    CGO_CFLAGS=-I/usr/local/cuda/include \
    CGO_LDFLAGS=-L/usr/local/cuda/lib64/stubs
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build-cuda

# Run stage: the CUDA runtime image brings cuBLAS (libcublas.so.12, loaded at
# run time); the NVIDIA container runtime brings the driver's libcuda.so.1.
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04
COPY --from=build /src/bin/iterbin-cuda /usr/local/bin/iterbin
COPY --from=build /src/experiments /experiments
WORKDIR /
ENTRYPOINT ["iterbin"]
CMD ["help"]
