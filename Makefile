# roost build, test and benchmark entry points.
# Go tools (buf and the protoc plugins) are pinned in tools/go.mod.

GO        ?= go
GOFLAGS   ?=
TOOLS     := $(GO) build -modfile=tools/go.mod -o .bin/
BENCHTIME ?= 2s

.PHONY: all build envd generate check-generated lint test test-go test-e2b bench clean

all: build

build: envd

envd:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/envd ./cmd/envd

.bin/buf .bin/protoc-gen-go .bin/protoc-gen-connect-go: tools/go.mod tools/go.sum
	$(TOOLS) github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		connectrpc.com/connect/cmd/protoc-gen-connect-go

generate: .bin/buf .bin/protoc-gen-go .bin/protoc-gen-connect-go
	.bin/buf generate

# Regenerates and fails if the committed generated code differs.
check-generated: generate
	@git diff --exit-code -- gen || { echo "generated code is stale: run make generate and commit gen/"; exit 1; }
	@test -z "$$(git status --porcelain -- gen)" || { echo "untracked generated files: commit gen/"; git status --porcelain -- gen; exit 1; }

lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); exit 1; }

test: check-generated lint test-go test-e2b

test-go:
	$(GO) test -race -count=1 -timeout 15m ./...

test-e2b: envd
	bash test/e2b/run.sh

bench: envd
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -benchmem ./envd/...
	$(GO) run ./bench/envd -envd bin/envd

clean:
	rm -rf bin .bin
