#!/usr/bin/env bash
# Every test, in one command (README's test command; .ci/run runs this): installs what the
# tests need (Debian packages, a Celery virtualenv), runs `cargo test --workspace
# --release`, the conformance suite against the warren binary, and then the same
# scenarios and interop scripts against a real RabbitMQ (differential check).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
{ [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import pika' 2>/dev/null; } || need+=(python3-pika)
command -v amqp-publish >/dev/null || need+=(amqp-tools)
# The management tests drive Debian's rabbitmqadmin (shipped with rabbitmq-server) and the
# web console in headless Chromium through chromedriver.
command -v rabbitmqadmin >/dev/null || need+=(rabbitmq-server)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# tests/dashboards.rs validates /metrics with promtool (Debian's prometheus).
command -v promtool >/dev/null || need+=(prometheus)
# python3 -m venv needs Debian's python3-venv.
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A virtualenv with Celery >= 5.5 (quorum queues, native delayed delivery) for
# tests/interop.rs's Celery tests (kept when it already has a recent enough Celery).
celery_venv=/tmp/warren-celery-venv
if ! "$celery_venv/bin/python" -c 'import sys, celery
sys.exit(tuple(int(x) for x in celery.__version__.split(".")[:2]) < (5, 5))' 2>/dev/null; then
  python3 -m venv "$celery_venv"
  "$celery_venv/bin/pip" install -q -U 'celery>=5.5,<6'
fi

# Unit, conformance (in-process, through lapin), interop, management, shutdown, restart.
# Examples are not built here (they are bench and demo programs, built by bench/*.sh and
# checked by `cargo clippy --all-targets`): eleven more linked binaries cost CI minutes.
# Every integration test is one binary (tests/all.rs), so a clean build links the crate
# with lapin and tokio once, not once per file.
cargo test --workspace --release --lib --bins --tests

# The suite's counts against the warren binary itself (cargo test captures them). With
# --tests this build resolves features as the test build did (dev-dependencies included),
# so it reuses its artifacts and only links the conformance executable.
cargo build --release -q --workspace --bins --tests
./target/release/warren --port 5679 --management-port 0 --data-dir "$(mktemp -d)" --log-level warn &
wpid=$!
trap 'kill $wpid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/5679) 2>/dev/null && break; sleep 0.1; done
echo "== conformance against Warren (127.0.0.1:5679) =="
./target/release/conformance --uri amqp://guest:guest@127.0.0.1:5679/%2f
kill $wpid 2>/dev/null || true

# Differential: the same scenarios against Debian's RabbitMQ. A scenario that fails there is
# a wrong scenario (or must be marked as a known difference); it is reported loudly, but
# only Warren's failures fail the run, so a slow or flaky reference node cannot block a
# landing.
ref=../shared/rabbitmq-reference.sh
if [ -f "$ref" ] && timeout 600 bash "$ref" start 5682; then
  # The ext.chash / ext.random scenarios need the two exchange plugins Debian ships.
  refdir=/tmp/rabbitmq-ref-5682
  HOME=$refdir RABBITMQ_ENABLED_PLUGINS_FILE=$refdir/enabled_plugins RABBITMQ_PLUGINS_EXPAND_DIR=$refdir/plugins \
    timeout 120 rabbitmq-plugins -n ref5682@localhost enable rabbitmq_consistent_hash_exchange rabbitmq_random_exchange >/dev/null ||
    echo "WARNING: could not enable the exchange plugins on the reference RabbitMQ" >&2
  echo "== conformance against RabbitMQ (127.0.0.1:5682) =="
  ./target/release/conformance --uri amqp://guest:guest@127.0.0.1:5682/%2f --reference ||
    echo "WARNING: conformance scenarios failed against the reference RabbitMQ (see above)" >&2
  echo "== pika scenarios against RabbitMQ =="
  /usr/bin/python3 tests/interop/pika_scenarios.py --port 5682 ||
    echo "WARNING: pika scenarios failed against the reference RabbitMQ" >&2
  echo "== amqp-tools round trip against RabbitMQ =="
  bash tests/interop/amqp_tools.sh 5682 ||
    echo "WARNING: amqp-tools round trip failed against the reference RabbitMQ" >&2
  echo "== Celery worker against RabbitMQ =="
  "$celery_venv/bin/python" tests/interop/celery_check.py --port 5682 ||
    echo "WARNING: Celery check failed against the reference RabbitMQ" >&2
  echo "== Celery worker, quorum queue and native delayed delivery, against RabbitMQ =="
  "$celery_venv/bin/python" tests/interop/celery_check.py --port 5682 --quorum ||
    echo "WARNING: Celery quorum check failed against the reference RabbitMQ" >&2
  bash "$ref" stop 5682 || true
else
  echo "warning: reference RabbitMQ unavailable; differential run skipped" >&2
fi

# Fault injection on a three-node cluster (issue 15): nodes in network namespaces, a seeded
# minute of kill -9, partitions and leader kills under a publishing and consuming client,
# then the checker (0 lost, 0 phantom, 0 unexplained duplicates, or this fails). Needs
# root and network namespaces; where those are missing it is skipped with a warning.
# Runs before the failpoints build below, so it reuses this build's warren binary.
if [ "$(id -u)" = 0 ] && ip netns add warren-ci-probe 2>/dev/null; then
  ip netns del warren-ci-probe
  echo "== cluster fault injection (bench/cluster_faults.sh --short 60 1 warren) =="
  RUN_DIR=/tmp/warren-ci-chaos bash bench/cluster_faults.sh --short 60 1 warren
else
  echo "WARNING: no root or no network namespaces: cluster fault injection skipped" >&2
fi

# Injected disk faults: the failpoints (src/store/fault.rs) exist only with this feature, so
# this rebuilds the crate (and the warren binary, with inert failpoints); it runs last.
cargo test --release --features failpoints --test disk_faults

echo "tests/run.sh: Warren passed every suite (unit, conformance, interop, shutdown, restart)"
