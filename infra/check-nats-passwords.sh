#!/bin/sh
# The nats container's entrypoint in compose: refuses the MIDCALL_NATS_PASSWORD_<ROLE>
# values nats-server would misread (it parses them as config: a date, a number, a
# boolean...), naming each, then runs its command. The rule and the message are
# shared/security/nats_auth.py's (ENV_PASSWORD_RULE); tests/test_infra.py holds them equal.
set -eu
LC_ALL=C
export LC_ALL

refused=0
for variable in $(env | sed -n 's/^\(MIDCALL_NATS_PASSWORD_[A-Z0-9_]*\)=.*/\1/p'); do
    eval "password=\${$variable-}"
    case $password in
        [!A-Za-z]* | *[!A-Za-z0-9]*) fits=no ;;
        *) if [ "${#password}" -ge 16 ]; then fits=yes; else fits=no; fi ;;
    esac
    if [ "$fits" = no ]; then
        printf '%s: %s\n' "$variable" 'nats-server would not read this password as it is from its environment; use 16 or more letters and digits (A-Z, a-z, 0-9), the first a letter (make one with `echo p$(openssl rand -hex 32)`)' >&2
        refused=1
    fi
done
[ "$refused" = 0 ] || exit 2
exec "$@"
