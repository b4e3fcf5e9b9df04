#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth for
# the test suite: uses the running one, starts an installed one, or installs one.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if command -v pg_isready >/dev/null && ready; then
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v pg_ctlcluster >/dev/null; then
    echo "PostgreSQL not found: installing it for the test suite" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba=/etc/postgresql/$version/main/pg_hba.conf
# Tests connect as postgres over TCP without a password, like CI's server.
if ! $SUDO grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
    echo "host all all 127.0.0.1/32 trust" | $SUDO tee /tmp/deskmate_hba >/dev/null
    $SUDO sh -c "cat $hba >> /tmp/deskmate_hba && cp /tmp/deskmate_hba $hba"
fi
$SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
for _ in $(seq 1 30); do
    ready && exit 0
    sleep 1
done
echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
