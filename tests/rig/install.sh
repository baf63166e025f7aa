#!/usr/bin/env bash
# Installs what the mailplug test rig needs (Dovecot, Postfix, OpenSSL, curl, dnsmasq, nginx, and
# node + npm for the OAuth2 server) from Debian's packages without starting any system daemon.
# Idempotent: does nothing when everything is installed. (The OAuth2 server's npm packages are
# installed by up.sh.)
set -euo pipefail

# dnsmasq-base (the binary without the system service) and nginx serve the discovery tests' DNS
# records and autoconfig documents.
PACKAGES=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix openssl ca-certificates curl
          dnsmasq-base nginx)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
        missing+=("$p")
    fi
done
# `script` (bsdutils) is used to see `postfix check` errors; it is Essential on Debian, but check.
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
# node and npm may come from elsewhere (e.g. NodeSource's nodejs, which includes npm): only
# install Debian's when the commands are missing.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: must run as root to install: ${missing[*]}" >&2
    exit 1
fi

echo "install.sh: installing ${missing[*]}" >&2

# Keep package maintainer scripts from starting system daemons: a policy-rc.d that exits 101.
# A missing one is created (and left, as Debian container images have it); a different existing
# one is set aside for the install and put back afterwards.
policy=/usr/sbin/policy-rc.d
policy_backup=""
restore_policy() {
    if [[ -n "$policy_backup" ]]; then
        mv -f "$policy_backup" "$policy"
    fi
}
if [[ -e "$policy" ]] && ! grep -qx 'exit 101' "$policy"; then
    policy_backup=$(mktemp /usr/sbin/policy-rc.d.mailplug-rig.XXXXXX)
    cp -p "$policy" "$policy_backup"
    trap restore_policy EXIT
    rm -f "$policy"
fi
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# created by mailplug tests/rig/install.sh: never start services from package scripts\nexit 101\n' \
        >"$policy"
    chmod 0755 "$policy"
fi

export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string localhost" | debconf-set-selections

# apt's chatter goes to stderr: up.sh keeps its stdout clean for callers that capture it.
apt_opts=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
          -o Dpkg::Options::=--force-confold --no-install-recommends)
if ! apt-get install "${apt_opts[@]}" "${missing[@]}" >&2; then
    # Package lists may be missing or stale on a fresh machine: update once and retry.
    apt-get update -q -o DPkg::Lock::Timeout=300 >&2
    apt-get install "${apt_opts[@]}" "${missing[@]}" >&2
fi
