#!/usr/bin/env bash
# Install Debian's nginx package when nginx is missing (used by tests, benchmarks and CI).
# Idempotent and non-interactive; never starts or enables the system service: the tests and
# benchmarks run nginx by hand as a normal process with -p/-c. Exits 0 when nginx is present.
set -euo pipefail

find_nginx() {
    command -v nginx 2>/dev/null && return 0
    for candidate in /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if path="$(find_nginx)"; then
    echo "nginx already installed: $path"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-nginx: nginx is missing and apt-get is not available; install nginx by hand" >&2
    exit 2
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-nginx: nginx is missing and this user is not root (no passwordless sudo)" >&2
        exit 2
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the package's maintainer scripts from starting the service (no init system here anyway).
policy_rc=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null
    $SUDO chmod 755 "$policy_rc"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        $SUDO rm -f "$policy_rc"
    fi
}
trap cleanup EXIT

# A missing package list makes apt-get install fail; refresh once when the install fails.
if ! $SUDO apt-get install -y -q --no-install-recommends nginx >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends nginx >/dev/null
fi

if path="$(find_nginx)"; then
    echo "nginx installed: $path ($("$path" -v 2>&1))"
    exit 0
fi
echo "install-nginx: apt-get finished but no nginx binary was found" >&2
exit 1
