# floyd — the two commands that matter: `make demo` and `make test`.
# Everything they need is installed by scripts/setup (idempotent); see DEVELOPERS.md.

.PHONY: all setup test demo bench stress soak sim fuzz-smoke lint fmt clean

all: test

setup:
	scripts/setup

test: setup
	scripts/test

demo:
	cargo run --locked -q -p floyd --example rollout

bench:
	scripts/bench

stress:
	FLOYD_CRASH_TRIALS=2000 cargo test --release --locked -p floyd-tests --test crash -- --nocapture

# reliability.md L-1 at its nightly length (make test runs 45 s of it)
soak:
	FLOYD_SOAK_SECS=1800 cargo test --release --locked -p floyd-tests --test l1_steady_state -- --nocapture

# More simulation seeds: make sim SEEDS=5000; new ones: make sim SEED_BASE=100000
SEEDS ?= 2000
SEED_BASE ?= 0
sim:
	FLOYD_SIM_SEEDS=$(SEEDS) FLOYD_SIM_SEED_BASE=$(SEED_BASE) cargo test --release --locked -p floyd-tests --test sim_replicaset --test sim_deployment --test sim_probes

fuzz-smoke:
	scripts/fuzz-smoke

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf .venv bindings/node/node_modules floyd-data
