#!/usr/bin/env bash
# Makes sure what the test suite needs outside Python is present:
#  - PostgreSQL on 127.0.0.1:5432 (started with pg_ctlcluster when installed but down)
#  - Debian's chromium for the report's browser test (installed with apt-get when root)
# Outside CI a missing piece only prints a note (the tests that need it skip and say why);
# under CI=true the tests that need it fail instead of skipping.
set -u
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
      echo "ensure_test_services: starting PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
      for _ in $(seq 1 20); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
    fi
  fi
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_test_services: installing Debian's chromium for the report test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "ensure_test_services: could not install chromium"
  else
    echo "ensure_test_services: chromium not found; the browser test will skip outside CI"
  fi
fi
exit 0
