# roost build, test and benchmark entry points.
# Go tools (buf, the protoc plugins, staticcheck) are pinned in tools/go.mod.

GO        ?= go
GOFLAGS   ?=
TOOLS     := $(GO) build -modfile=tools/go.mod -o .bin/

.PHONY: all build dashboard envd roost roost-init roost-guest roost-interpreter generate check-generated lint test test-go test-short test-chaos test-e2b test-e2b-stack test-e2b-matrix test-e2b-domain test-e2b-python-domain test-e2b-suite test-e2b-python test-attacks test-interpreter screenshots bench clean

all: build

build: envd roost roost-init roost-guest roost-interpreter

envd:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/envd ./cmd/envd

roost: dashboard
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/roost ./cmd/roost

# The web dashboard (dashboard/web, TypeScript): npm ci from its lockfile
# when node_modules is older than the lockfile, then npm run build, which
# type-checks, bundles into dashboard/web/dist (embedded by the roost
# binary) and fails when the JavaScript is over its 250 KB gzipped budget.
DASHBOARD := dashboard/web

dashboard: $(DASHBOARD)/node_modules/.package-lock.json
	cd $(DASHBOARD) && npm run build --silent

$(DASHBOARD)/node_modules/.package-lock.json: $(DASHBOARD)/package-lock.json
	cd $(DASHBOARD) && npm ci --no-audit --no-fund

# The init of namespace sandboxes; the driver looks for it next to bin/roost.
roost-init:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/roost-init ./cmd/roost-init

# The init of VM sandboxes (qemu runtime); the driver looks for it next to bin/roost.
roost-guest:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/roost-guest ./cmd/roost-guest

# The code interpreter the template code-interpreter-v1 runs; the control
# plane looks for it next to bin/roost.
roost-interpreter:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/roost-interpreter ./cmd/roost-interpreter

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

.bin/staticcheck: tools/go.mod tools/go.sum
	$(TOOLS) honnef.co/go/tools/cmd/staticcheck

# bench/run is a module of its own (the plotting libraries stay out of
# go.mod), which ./... does not reach: it is vetted and tested beside.
BENCH_MOD := bench/run
# deploy/check is one too: the Kubernetes API types it checks the
# manifests with stay out of it as well.
DEPLOY_MOD := deploy/check

lint: .bin/buf .bin/staticcheck dashboard
	$(GO) vet ./...
	$(GO) -C $(BENCH_MOD) vet ./...
	$(GO) -C $(DEPLOY_MOD) vet ./...
	.bin/staticcheck ./...
	cd $(BENCH_MOD) && $(CURDIR)/.bin/staticcheck ./...
	cd $(DEPLOY_MOD) && $(CURDIR)/.bin/staticcheck ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); exit 1; }
	.bin/buf lint

test: check-generated lint test-go test-attacks test-chaos test-interpreter test-e2b test-e2b-stack test-e2b-matrix test-e2b-domain test-e2b-python-domain test-e2b-suite test-e2b-python

# -p 1: packages that need root share host-wide state (the nftables table,
# netns and cgroup names with the roost prefix, network slots), and their
# start-up pruning must not race another package's sandboxes.
test-go: dashboard
	$(GO) test -race -count=1 -timeout 20m -p 1 -skip '^TestAttack|^TestChaos' ./...
	$(GO) -C $(BENCH_MOD) test -race -count=1 ./...
	$(GO) -C $(DEPLOY_MOD) test -count=1 ./...

# The attack suite (docs/security.md): every test named TestAttack*, each an
# attack on the sandbox boundary from inside a real sandbox of every
# runtime this host runs (or from the host, another sandbox, a tampered
# envd, a hostile client) that must fail while the sandbox keeps working.
# Prints the table of attacks and results; fails when one got through.
# test-go skips them so that make test runs each once.
test-attacks:
	$(GO) test -json -count=1 -timeout 30m -p 1 -run '^TestAttack' ./... | $(GO) run ./test/attacktable

# The chaos test (docs/cluster.md): three control-plane replicas on
# PostgreSQL ($$ROOST_TEST_POSTGRES, which .ci/run sets) and three agents in
# network namespaces of their own, under load, through kill -9 of the
# leader and of another replica, an agent cut off for a minute, a
# PostgreSQL restart, an agent killed and restarted, and a replica stopped
# under terminal sessions. Prints the table of faults; about 3 minutes.
test-chaos:
	ROOST_CHAOS=1 $(GO) test -count=1 -timeout 20m -run '^TestChaos$$' -v ./cmd/roost/

# The inner loop: the fast tests only (those that boot VMs, drive the E2B
# SDK or start hundreds of sandboxes skip under -short), without the race
# detector; under 3 minutes on 2 cores. make test runs everything.
test-short: dashboard
	$(GO) test -short -count=1 -timeout 10m -p 1 ./...
	$(GO) -C $(BENCH_MOD) test -short -count=1 ./...
	$(GO) -C $(DEPLOY_MOD) test -short -count=1 ./...

test-e2b: envd
	bash test/e2b/run.sh

# E2B's @e2b/code-interpreter package, unmodified: against roost-interpreter
# alone, then against roost up (its first create builds code-interpreter-v1).
test-interpreter: build
	bash test/codeinterpreter/run.sh
	bash test/codeinterpreter/run-stack.sh

# The E2B SDK against `roost up` (the whole stack); skips unless root.
test-e2b-stack: build
	bash test/e2b/run-stack.sh

# E2B JS SDK releases (newest 1.x, first 2.x, 2.14.1, 2.45.0, newest) and the
# E2B CLI against `roost up`, in URL mode and through test/e2b/domain/stack.sh
# in domain + TLS mode: a table of release × step (test/e2b/matrix/run.sh);
# skips unless root. About 40 seconds.
test-e2b-matrix: build
	bash test/e2b/matrix/run.sh

# E2B's SDKs (JS newest 2.x and 1.x, Python) with nothing but E2B_DOMAIN and
# E2B_API_KEY, against `roost up --domain roost.test --tls` on 127.0.0.3:443
# (ROOST_TEST_ADDR); skips unless root. test/e2b/domain/stack.sh runs any
# command against that stack.
test-e2b-domain: build
	bash test/e2b/domain/run.sh

# E2B's Python SDK tests (core group of ../shared/e2b-python, by its run.sh)
# in the same domain + TLS mode: at least 240 of 246 pass (PY_MIN_PASSED);
# skips unless root and the suite is there. About 2 minutes.
test-e2b-python-domain: build
	bash test/e2b/domain/python-suite.sh

# E2B's own test suites against a fresh `roost up` (test/e2b-suite/run.sh):
# the JS suite's core group with its own SDK and the newest published one
# (at least 128 of 129 each; the extended group is reported), and the Python
# SDK's core group (at least 240 of 246). Skip unless root and unless
# ../shared/e2b-suite and ../shared/e2b-python are there. The JS suite runs
# with roost up's warm pool (docs/pools.md), the Python suite without one.
test-e2b-suite: build
	bash test/e2b-suite/run.sh js

test-e2b-python: build
	ROOST_SUITE_WARM_POOL=base=0 bash test/e2b-suite/run.sh python

# The dashboard's screenshots in docs/dashboard (the README shows them):
# its browser test (dashboard/browser_linux_test.go: headless Chromium
# against the real stack; needs root) writes them there.
screenshots: dashboard
	ROOST_SCREENSHOTS=$(CURDIR)/docs/dashboard $(GO) test -count=1 -run '^TestDashboard$$' ./dashboard/

# Benchmarks against real components, each beside a baseline measured in
# the same run: writes bench/results.md and bench/charts/*.png (needs root).
# QUICK=1 is a smoke run for CI (about 1 minute); the full run takes
# about 6 on 2 cores. DENSITY is how many idle sandboxes the density run
# starts (default 1000, quick 20). QEMU=1
# adds the qemu runtime's rows (create and restore of VM sandboxes).
QUICK   ?=
DENSITY ?=
QEMU    ?=

# The runner is built from its module and run from here, the repository's
# root, where it finds bin/, the packages it benchmarks and bench/.
bench: build
	$(GO) -C $(BENCH_MOD) build -o $(CURDIR)/.bin/bench-run .
	.bin/bench-run $(if $(QUICK),-quick) $(if $(DENSITY),-density $(DENSITY)) $(if $(QEMU),-qemu)

clean:
	rm -rf bin .bin
