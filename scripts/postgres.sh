#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests (user postgres, trust auth
# from loopback): start the local cluster if one is installed, else install it from the distribution.
set -euo pipefail
# Ready means the tests can log in: a server that asks for a password is not ready yet (the trust
# lines below are missing). Without a psql client, an open port is all that can be checked.
ready() {
  if command -v psql >/dev/null 2>&1; then
    psql -w -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1 </dev/null
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}
ready && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL is not installed: installing it from the distribution's packages" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba=/etc/postgresql/$version/main/pg_hba.conf
if ! as_root grep -q "perpflow-tests" "$hba"; then
  # Loopback-only trust for the test user, as on the development machines.
  as_root sed -i '1i host all all 127.0.0.1/32 trust # perpflow-tests\nhost all all ::1/128 trust # perpflow-tests' "$hba"
fi
# Start it, or reload it if the package's install already started it (the trust lines above must
# take effect either way).
as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
  || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
