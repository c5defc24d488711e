#!/bin/sh
# In compose, before nats-server starts: the file of runtime credentials' accounts its
# config includes must exist (empty until the runtime-accounts container, which runs as
# nobody, writes it into the shared volume), then runs its command.
set -eu
accounts=${MIDCALL_NATS_ACCOUNTS_DIR:-/etc/nats/accounts}
[ -f "$accounts/runtime-accounts.conf" ] || : > "$accounts/runtime-accounts.conf"
chown -R 65534:65534 "$accounts"
exec "$@"
