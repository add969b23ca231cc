#!/usr/bin/env bash
# Durable SMTP acceptance throughput: mailgw vs stock Postfix (fsync) vs bare aiosmtpd.
# Thin wrapper around bench/smtp_throughput.py (see its docstring and bench/README.md).
#
#   sudo bench/smtp_throughput.sh                       # 3 runs x 5000 msgs x {10 KB, 100 KB}
#   MSGS=5000 RUNS=1 DB=postgres bench/smtp_throughput.sh
#   SERVERS="mailgw bare" PROFILE=1 bench/smtp_throughput.sh
#
# Env: MSGS RUNS SESSIONS SIZES WARMUP SERVERS DB PG_URL PROFILE BENCH_DIR OUT LOAD_TIMEOUT
# Loopback only; every process started is stopped at the end (also on Ctrl-C / SIGTERM).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=$here/../.venv/bin/python
[ -x "$py" ] || { echo "missing $py (create the virtualenv first)" >&2; exit 1; }
[ -x /usr/sbin/smtp-source ] || { echo "missing /usr/sbin/smtp-source (apt-get install postfix)" >&2; exit 1; }
if [ "$(id -u)" != 0 ] && [[ " ${SERVERS:-mailgw postfix bare} " == *" postfix "* ]]; then
    echo "note: not root, the Postfix baseline will be skipped" >&2
fi
exec "$py" "$here/smtp_throughput.py" "$@"
