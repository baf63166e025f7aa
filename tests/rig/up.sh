#!/usr/bin/env bash
# Starts the mailplug test rig: Dovecot (IMAP/POP3/LMTP) and Postfix (submission) on loopback,
# with a CA and server certificate made at run time, and an OAuth2 authorization server
# (tests/rig/oauth, node) whose access tokens Dovecot and Postfix accept (XOAUTH2, OAUTHBEARER).
# Writes $RIG_DIR/rig.env.
# Idempotent: a healthy rig from this same script is left running; anything else that a previous
# run of this rig started is stopped and everything is started afresh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
# shellcheck source=dns/start.sh
source "$HERE/dns/start.sh"

[[ $(id -u) -eq 0 ]] || rig_die "up.sh must run as root (Dovecot and Postfix masters need it)"

"$HERE/install.sh"

if [[ -d "$RIG_DIR" && ! -e "$RIG_MARKER" && -n "$(ls -A "$RIG_DIR" 2>/dev/null)" ]]; then
    rig_die "$RIG_DIR exists, is not empty and is not a mailplug rig dir (no $RIG_MARKER); refusing to use it"
fi
mkdir -p "$RIG_DIR"
chmod 0755 "$RIG_DIR"
touch "$RIG_MARKER"
rig_lock

fingerprint=$( { cat "$HERE/common.sh" "$HERE/up.sh" "$HERE/oauth/server.mjs" "$HERE/oauth/package.json" \
                    "$HERE/oauth/package-lock.json" \
                    "$HERE/smtp2/server.mjs" "$HERE/smtp2/package.json" "$HERE/smtp2/package-lock.json";
                 (cd "$HERE/dns" && find . -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done); } \
               | sha256sum | cut -d' ' -f1)

# ---- already up? ---------------------------------------------------------------------------
rig_healthy() {
    local host port
    [[ -r "$RIG_FINGERPRINT" && "$(cat "$RIG_FINGERPRINT")" == "$fingerprint" ]] || return 1
    [[ -r "$RIG_ENV" && -r "$RIG_CA" ]] || return 1
    [[ -n "$(rig_dovecot_pids)" && -n "$(rig_postfix_pids)" && -n "$(rig_oauth_pids)" ]] || return 1
    [[ -n "$(rig_smtp2_pids)" ]] || return 1
    [[ -n "$(rig_dnsmasq_pids)" && -n "$(rig_nginx_pids)" ]] || return 1
    [[ -S "$DOVECOT_BASE/auth-client" && -S "$DOVECOT_BASE/lmtp" ]] || return 1
    while read -r host port; do
        rig_port_listening "$host" "$port" || return 1
    done < <(rig_listeners)
    return 0
}

if rig_healthy; then
    rig_log "already up and healthy: $RIG_ENV"
    exit 0
fi

# ---- stop leftovers of a previous run of this rig ------------------------------------------
rig_stop
if ! busy=$(rig_wait_ports_free); then
    rig_log "these rig ports are still taken by something this rig did not start:"
    printf '  %s\n' $busy >&2
    command -v ss >/dev/null && ss -ltnp 2>/dev/null | grep -E ':(10143|10993|10110|10995|10587|10465|10144|10111|10588|10800|10589|10466|10590|10053|443)\b' >&2 || true
    rig_die "free the ports above (or stop the other rig) and re-run"
fi

rm -rf "$RIG_TLS" "$DOVECOT_DIR" "$POSTFIX_DIR" "$RIG_MAIL" "$RIG_PIDS" "$RIG_LOGS" "$RIG_BIN" \
       "$RIG_ENV" "$RIG_FINGERPRINT" "$DNS_DIR" "$WEB_DIR" "$SMTP2_SPOOL"
mkdir -p "$RIG_TLS" "$DOVECOT_DIR" "$DOVECOT_STATE" "$RIG_MAIL" "$RIG_PIDS" "$RIG_LOGS" "$RIG_BIN" \
         "$POSTFIX_CONF" "$POSTFIX_SPOOL" "$POSTFIX_DATA"
chmod 0755 "$RIG_MAIL" "$RIG_LOGS" "$DOVECOT_DIR" "$POSTFIX_DIR" "$POSTFIX_SPOOL"
touch "$DOVECOT_LOG" "$POSTFIX_LOG"

# ---- TLS: a CA and a server certificate for localhost / 127.0.0.1 / 127.0.0.2 --------------
cat >"$RIG_TLS/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = mailplug rig
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:127.0.0.2
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
(
    set -e
    cd "$RIG_TLS"
    umask 077
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ca.key
    openssl req -x509 -new -config openssl.cnf -extensions v3_ca -key ca.key -sha256 -days 3650 \
        -subj "/O=mailplug test rig/CN=mailplug rig test CA" -set_serial "0x01$(openssl rand -hex 15)" \
        -out ca.pem
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server.key
    openssl req -new -config openssl.cnf -key server.key -subj "/O=mailplug test rig/CN=localhost" \
        -out server.csr
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -sha256 -days 825 \
        -set_serial "0x01$(openssl rand -hex 15)" -extfile openssl.cnf -extensions v3_server \
        -out server.pem 2>/dev/null
    cat server.pem ca.pem >server-chain.pem
    chmod 0644 ca.pem server.pem server-chain.pem
    openssl verify -CAfile ca.pem server.pem >/dev/null
) || rig_die "generating the test certificates failed"

# The autoconfig web server's certificate (names in RIG_AUTOCONFIG_NAMES), from the same CA.
rig_web_cert

# ---- OAuth2 authorization server ---------------------------------------------------------------
# npm ci into $OAUTH_DIR (kept across fresh starts), skipped when package.json, package-lock.json
# and the node version are those of the last successful install.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || rig_die "node and npm are needed (install.sh installs them)"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
((node_major >= 18)) || rig_die "node >= 18 is needed for the OAuth2 server (found $(node --version 2>&1))"
# rig_npm_ci SRC DEST STAMP_PACKAGES...: npm ci of SRC's package.json / package-lock.json into
# DEST, skipped when those files and the node version are those of the last successful install.
rig_npm_ci() {
    local src=$1 dest=$2 stamp p
    shift 2
    mkdir -p "$dest"
    chmod 0755 "$dest"
    stamp=$( { cat "$src/package.json" "$src/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)
    local ok=yes
    [[ "$(cat "$dest/.npm-stamp" 2>/dev/null)" == "$stamp" ]] || ok=no
    for p in "$@"; do
        [[ -r "$dest/node_modules/$p/package.json" ]] || ok=no
    done
    [[ $ok == yes ]] && return 0
    rig_log "npm ci in $dest"
    rm -f "$dest/.npm-stamp"
    cp "$src/package.json" "$src/package-lock.json" "$dest/"
    if ! (cd "$dest" && timeout 300 npm ci --no-audit --no-fund --no-update-notifier --loglevel=error) \
            </dev/null >"$RIG_LOGS/$(basename "$dest")-npm.log" 2>&1 9>&-; then
        tail -n 30 "$RIG_LOGS/$(basename "$dest")-npm.log" >&2
        rig_die "npm ci in $dest failed (log: $RIG_LOGS/$(basename "$dest")-npm.log)"
    fi
    echo "$stamp" >"$dest/.npm-stamp"
}
# oauth2-mock-server 9 asks for node 22 but runs on 20: npm's EBADENGINE warning is expected.
rig_npm_ci "$HERE/oauth" "$OAUTH_DIR" oauth2-mock-server jose
cp "$HERE/oauth/server.mjs" "$OAUTH_SERVER"
chmod 0644 "$OAUTH_SERVER"
for entry in "${RIG_USERS[@]}"; do
    echo "${entry%%:*}@$RIG_DOMAIN"
done >"$OAUTH_USERS"
chmod 0644 "$OAUTH_USERS"
touch "$OAUTH_LOG"

# As nobody, in its own session (so a test harness killing its process group does not take it
# down), detached from the caller's stdio and from the lock fd.
setsid setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$(command -v node)" "$OAUTH_SERVER" --host="$RIG_IP" --port="$RIG_OAUTH_PORT" \
    --issuer="$RIG_OAUTH_URL" --users="$OAUTH_USERS" --rig-dir="$RIG_DIR" \
    </dev/null >>"$OAUTH_LOG" 2>&1 9>&- &
oauth_up=no
for ((i = 0; i < 150; i++)); do
    if curl -sf --max-time 1 -o /dev/null "$RIG_OAUTH_URL/health" 2>/dev/null; then oauth_up=yes; break; fi
    [[ -n "$(rig_oauth_pids)" ]] || ((i < 10)) || break
    sleep 0.1
done
pid=$(rig_oauth_pids | head -n1)
if [[ $oauth_up != yes ]] || ! rig_is_our_oauth "$pid"; then
    tail -n 30 "$OAUTH_LOG" >&2
    rig_die "the OAuth2 server did not come up on $RIG_OAUTH_URL"
fi
echo "$pid" >"$OAUTH_PIDFILE"

# ---- the second SMTP server (smtp2) ------------------------------------------------------------
# Runs as nobody, like the OAuth2 server, with its own copy of the key and the users it accepts.
rig_npm_ci "$HERE/smtp2" "$SMTP2_DIR" smtp-server
cp "$HERE/smtp2/server.mjs" "$SMTP2_SERVER"
chmod 0644 "$SMTP2_SERVER"
mkdir -p "$SMTP2_SPOOL"
chown 65534:65534 "$SMTP2_SPOOL"
chmod 0755 "$SMTP2_SPOOL"
(
    umask 077
    for entry in "${RIG_USERS[@]}"; do
        echo "${entry%%:*}@$RIG_DOMAIN:${entry#*:}"
    done >"$SMTP2_USERS"
    cp "$RIG_TLS/server.key" "$SMTP2_DIR/server.key"
)
chown 65534:65534 "$SMTP2_USERS" "$SMTP2_DIR/server.key"
touch "$SMTP2_LOG"
setsid setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$(command -v node)" "$SMTP2_SERVER" --host="$RIG_IP" \
    --starttls-port="$RIG_SMTP2_STARTTLS_PORT" --tls-port="$RIG_SMTP2_TLS_PORT" \
    --nosize-port="$RIG_SMTP2_NOSIZE_PORT" \
    --key="$SMTP2_DIR/server.key" --cert="$RIG_TLS/server-chain.pem" --users="$SMTP2_USERS" \
    --spool="$SMTP2_SPOOL" --size="$RIG_SMTP2_SIZE_LIMIT" --rig-dir="$RIG_DIR" \
    </dev/null >>"$SMTP2_LOG" 2>&1 9>&- &
smtp2_up=no
for ((i = 0; i < 150; i++)); do
    if rig_port_listening "$RIG_IP" "$RIG_SMTP2_NOSIZE_PORT"; then smtp2_up=yes; break; fi
    [[ -n "$(rig_smtp2_pids)" ]] || ((i < 10)) || break
    sleep 0.1
done
pid=$(rig_smtp2_pids | head -n1)
if [[ $smtp2_up != yes ]] || ! rig_is_our_smtp2 "$pid"; then
    tail -n 30 "$SMTP2_LOG" >&2
    rig_die "the second SMTP server (smtp2) did not come up on $RIG_IP:$RIG_SMTP2_STARTTLS_PORT/$RIG_SMTP2_TLS_PORT"
fi
echo "$pid" >"$SMTP2_PIDFILE"

# ---- Dovecot ---------------------------------------------------------------------------------
users_lines=""
for entry in "${RIG_USERS[@]}"; do
    name=${entry%%:*}
    pass=${entry#*:}
    login="$name@$RIG_DOMAIN"
    home="$RIG_MAIL/$login"
    mkdir -p "$home"
    chown 65534:65534 "$home"
    chmod 0700 "$home"
    users_lines+="$login:{PLAIN}$pass:65534:65534::$home::"$'\n'
done
printf '%s' "$users_lines" >"$DOVECOT_USERS"
chown root:dovecot "$DOVECOT_USERS"
chmod 0640 "$DOVECOT_USERS"

ssl_dh_line=""
[[ -r /usr/share/dovecot/dh.pem ]] && ssl_dh_line="ssl_dh = </usr/share/dovecot/dh.pem"

cat >"$DOVECOT_CONF" <<EOF
# Generated by mailplug tests/rig/up.sh; rewritten on every fresh start.
instance_name = mailplug-rig
base_dir = $DOVECOT_BASE
state_dir = $DOVECOT_STATE
log_path = $DOVECOT_LOG
info_log_path = $DOVECOT_LOG
debug_log_path = $DOVECOT_LOG
log_timestamp = "%Y-%m-%d %H:%M:%S "
hostname = mail.$RIG_DOMAIN
postmaster_address = postmaster@$RIG_DOMAIN

protocols = imap pop3 lmtp
listen = $RIG_IP

# Credentials only over TLS. Note: Dovecot treats a connection whose client address equals the
# server address (127.0.0.1 -> 127.0.0.1) as secure and allows plaintext LOGIN before STARTTLS.
ssl = required
disable_plaintext_auth = yes
ssl_cert = <$RIG_TLS/server.pem
ssl_key = <$RIG_TLS/server.key
ssl_min_protocol = TLSv1.2
$ssl_dh_line

auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
auth_verbose = yes

# Passwords for PLAIN/LOGIN; OAuth2 bearer tokens (XOAUTH2/OAUTHBEARER) checked by the rig's
# OAuth2 server (introspection: signature, expiry, revocation; its email must be the login name).
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u $DOVECOT_USERS
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DOVECOT_DIR/oauth2.conf
}
userdb {
  driver = passwd-file
  args = username_format=%u $DOVECOT_USERS
}
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
}

service imap-login {
  inet_listener imap {
    address = $RIG_IP
    port = $RIG_IMAP_STARTTLS_PORT
  }
  inet_listener imaps {
    address = $RIG_IP
    port = $RIG_IMAPS_PORT
    ssl = yes
  }
  inet_listener imap_notls {
    address = $RIG_IMAP_NOTLS_HOST
    port = $RIG_IMAP_NOTLS_PORT
  }
}
service pop3-login {
  inet_listener pop3 {
    address = $RIG_IP
    port = $RIG_POP3_STLS_PORT
  }
  inet_listener pop3s {
    address = $RIG_IP
    port = $RIG_POP3S_PORT
    ssl = yes
  }
  inet_listener pop3_notls {
    address = $RIG_POP3_NOTLS_HOST
    port = $RIG_POP3_NOTLS_PORT
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
service auth {
  # Postfix SASL (smtpd_sasl_type = dovecot).
  unix_listener auth-client {
    mode = 0666
  }
}
# No auth penalty: otherwise even a correct login waits up to 15 s after failed ones.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
protocol imap {
  mail_max_userip_connections = 100
}
protocol pop3 {
  mail_max_userip_connections = 100
}

# Negative-test listeners on $RIG_NOTLS_IP: no TLS at all (no STARTTLS/STLS advertised) and
# plaintext LOGIN/USER+PASS accepted.
local $RIG_NOTLS_IP {
  ssl = no
  disable_plaintext_auth = no
}
EOF

cat >"$DOVECOT_DIR/oauth2.conf" <<EOF
# Generated by mailplug tests/rig/up.sh: the oauth2 passdb's settings.
introspection_mode = post
introspection_url = $RIG_OAUTH_URL/strict/introspect
username_attribute = email
active_attribute = active
active_value = true
timeout_msecs = 5000
EOF
chmod 0644 "$DOVECOT_DIR/oauth2.conf"

doveconf -c "$DOVECOT_CONF" -n >/dev/null || rig_die "dovecot rejected $DOVECOT_CONF (see above)"

# A clean base_dir: a stale anvil socket adds a 5 s retry to logins.
rm -rf "$DOVECOT_BASE"
# Dovecot keeps the caller's stdout/stderr open: detach them or a piped caller never returns.
# Close the lock fd too, or the daemon would hold the rig lock forever.
dovecot -c "$DOVECOT_CONF" </dev/null >>"$DOVECOT_LOG" 2>&1 9>&- \
    || { tail -n 30 "$DOVECOT_LOG" >&2; rig_die "dovecot failed to start"; }

for ((i = 0; i < 100; i++)); do
    [[ -s "$DOVECOT_BASE/master.pid" && -S "$DOVECOT_BASE/auth-client" && -S "$DOVECOT_BASE/lmtp" ]] && break
    sleep 0.1
done
pid=$(head -n1 "$DOVECOT_BASE/master.pid" 2>/dev/null || true)
rig_is_our_dovecot "$pid" || { tail -n 30 "$DOVECOT_LOG" >&2; rig_die "dovecot did not come up"; }
echo "$pid" >"$DOVECOT_PIDFILE"

cat >"$RIG_BIN/doveadm" <<EOF
#!/bin/sh
# doveadm for the mailplug test rig's own Dovecot instance.
exec doveadm -c $DOVECOT_CONF "\$@"
EOF
chmod 0755 "$RIG_BIN/doveadm"

# ---- Postfix ---------------------------------------------------------------------------------
chown root:root "$POSTFIX_SPOOL"
chown postfix:postfix "$POSTFIX_DATA"
chmod 0700 "$POSTFIX_DATA"

vmailbox=""
for entry in "${RIG_USERS[@]}"; do
    vmailbox+="${entry%%:*}@$RIG_DOMAIN OK"$'\n'
done
printf '%s' "$vmailbox" >"$POSTFIX_CONF/vmailbox"

cat >"$POSTFIX_CONF/main.cf" <<EOF
# Generated by mailplug tests/rig/up.sh; rewritten on every fresh start.
compatibility_level = 3.6
queue_directory = $POSTFIX_SPOOL
data_directory = $POSTFIX_DATA
mail_owner = postfix
setgid_group = postdrop

myhostname = mail.$RIG_DOMAIN
mydomain = $RIG_DOMAIN
myorigin = \$mydomain
mydestination =
mynetworks = 127.0.0.1/32
inet_interfaces = $RIG_IP
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
readme_directory = no
smtpd_banner = \$myhostname ESMTP mailplug-rig

# Everything for $RIG_DOMAIN goes to Dovecot over LMTP; nothing ever leaves the machine.
virtual_mailbox_domains = $RIG_DOMAIN
virtual_mailbox_maps = texthash:$POSTFIX_CONF/vmailbox
virtual_transport = lmtp:unix:$DOVECOT_BASE/lmtp
relay_domains =
default_transport = error:mailplug rig delivers to $RIG_DOMAIN only
relay_transport = error:mailplug rig delivers to $RIG_DOMAIN only
local_transport = error:mailplug rig has no local delivery
minimal_backoff_time = 5s
maximal_backoff_time = 10s
queue_run_delay = 5s

# Long lines (e.g. SASL XOAUTH2 tokens) would otherwise fail at 2048.
line_length_limit = 16384

smtpd_tls_cert_file = $RIG_TLS/server.pem
smtpd_tls_key_file = $RIG_TLS/server.key
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_tls_auth_only = yes

smtpd_sasl_type = dovecot
smtpd_sasl_path = $DOVECOT_BASE/auth-client
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject

maillog_file = $POSTFIX_LOG
maillog_file_prefixes = $RIG_DIR
EOF

sub_opts="  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject"
cat >"$POSTFIX_CONF/master.cf" <<EOF
# Generated by mailplug tests/rig/up.sh. No port 25: only the submission listeners below.
# service type  private unpriv  chroot  wakeup  maxproc command + args
$RIG_IP:$RIG_SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
$sub_opts
$RIG_IP:$RIG_SMTPS_PORT inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
$sub_opts
$RIG_SMTP_NOTLS_HOST:$RIG_SMTP_NOTLS_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission-notls
  -o smtpd_tls_security_level=none
  -o smtpd_tls_auth_only=no
$sub_opts
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
lmtp       unix  - - n -  - lmtp
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF

export MAIL_CONFIG=$POSTFIX_CONF
if ! postfix -c "$POSTFIX_CONF" check >/dev/null 2>&1; then
    # Without a terminal `postfix check` reports only to syslog; `script` gives it one.
    script -qec "postfix -c $POSTFIX_CONF check" /dev/null >&2 || true
    rig_die "postfix check failed for $POSTFIX_CONF"
fi
if ! postfix -c "$POSTFIX_CONF" start >>"$POSTFIX_LOG" 2>&1 </dev/null 9>&-; then
    script -qec "postfix -c $POSTFIX_CONF start" /dev/null >&2 || true
    tail -n 30 "$POSTFIX_LOG" >&2
    rig_die "postfix failed to start"
fi
unset MAIL_CONFIG
for ((i = 0; i < 100; i++)); do
    pid=$(head -n1 "$POSTFIX_SPOOL/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
    rig_is_our_postfix "$pid" && break
    sleep 0.1
done
rig_is_our_postfix "$pid" || { tail -n 30 "$POSTFIX_LOG" >&2; rig_die "postfix did not come up"; }
echo "$pid" >"$POSTFIX_PIDFILE"

# ---- DNS (dnsmasq) and autoconfig over HTTPS (nginx) for the discovery tests ------------------
rig_dns_start "$HERE/dns"
rig_web_start "$HERE/dns"

# ---- wait for every listener -----------------------------------------------------------------
deadline=$((SECONDS + 30))
while read -r host port; do
    until rig_port_open "$host" "$port"; do
        if ((SECONDS >= deadline)); then
            rig_log "--- tail of $DOVECOT_LOG"; tail -n 30 "$DOVECOT_LOG" >&2
            rig_log "--- tail of $POSTFIX_LOG"; tail -n 30 "$POSTFIX_LOG" >&2
            rig_die "nothing accepts connections on $host:$port after 30 s"
        fi
        sleep 0.1
    done
done < <(rig_listeners)

# Auth and userdb answer?
"$RIG_BIN/doveadm" user "support@$RIG_DOMAIN" >/dev/null 2>&1 \
    || { tail -n 30 "$DOVECOT_LOG" >&2; rig_die "dovecot userdb lookup failed"; }

# ---- rig.env -----------------------------------------------------------------------------------
{
    echo "# mailplug test rig, written by tests/rig/up.sh. KEY=VALUE, no quoting; source it or parse it."
    echo "RIG_DIR=$RIG_DIR"
    echo "RIG_CA=$RIG_CA"
    echo "RIG_SERVER_CERT=$RIG_TLS/server.pem"
    echo "RIG_HOST=$RIG_HOST"
    echo "RIG_IP=$RIG_IP"
    echo "RIG_DOMAIN=$RIG_DOMAIN"
    echo "RIG_IMAP_STARTTLS_PORT=$RIG_IMAP_STARTTLS_PORT"
    echo "RIG_IMAPS_PORT=$RIG_IMAPS_PORT"
    echo "RIG_POP3_STLS_PORT=$RIG_POP3_STLS_PORT"
    echo "RIG_POP3S_PORT=$RIG_POP3S_PORT"
    echo "RIG_SUBMISSION_PORT=$RIG_SUBMISSION_PORT"
    echo "RIG_SMTPS_PORT=$RIG_SMTPS_PORT"
    echo "RIG_IMAP_NOTLS_HOST=$RIG_IMAP_NOTLS_HOST"
    echo "RIG_IMAP_NOTLS_PORT=$RIG_IMAP_NOTLS_PORT"
    echo "RIG_POP3_NOTLS_HOST=$RIG_POP3_NOTLS_HOST"
    echo "RIG_POP3_NOTLS_PORT=$RIG_POP3_NOTLS_PORT"
    echo "RIG_SMTP_NOTLS_HOST=$RIG_SMTP_NOTLS_HOST"
    echo "RIG_SMTP_NOTLS_PORT=$RIG_SMTP_NOTLS_PORT"
    for entry in "${RIG_USERS[@]}"; do
        name=${entry%%:*}
        upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
        echo "RIG_${upper}_USER=$name@$RIG_DOMAIN"
        echo "RIG_${upper}_PASS=${entry#*:}"
    done
    echo "DOVEADM=$RIG_BIN/doveadm"
    echo "RIG_DOVECOT_CONF=$DOVECOT_CONF"
    echo "RIG_POSTFIX_CONF=$POSTFIX_CONF"
    echo "RIG_DOVECOT_LOG=$DOVECOT_LOG"
    echo "RIG_POSTFIX_LOG=$POSTFIX_LOG"
    echo "RIG_OAUTH_URL=$RIG_OAUTH_URL"
    echo "RIG_OAUTH_ISSUER=$RIG_OAUTH_URL"
    echo "RIG_OAUTH_AUTHORIZE_URL=$RIG_OAUTH_URL/authorize"
    echo "RIG_OAUTH_TOKEN_URL=$RIG_OAUTH_URL/token"
    echo "RIG_OAUTH_REVOKE_URL=$RIG_OAUTH_URL/strict/revoke"
    echo "RIG_OAUTH_INTROSPECT_URL=$RIG_OAUTH_URL/strict/introspect"
    echo "RIG_OAUTH_USERINFO_URL=$RIG_OAUTH_URL/userinfo"
    echo "RIG_OAUTH_JWKS_URL=$RIG_OAUTH_URL/jwks"
    echo "RIG_OAUTH_DISCOVERY_URL=$RIG_OAUTH_URL/.well-known/openid-configuration"
    echo "RIG_OAUTH_CLIENT_ID=$RIG_OAUTH_CLIENT_ID"
    echo "RIG_OAUTH_CLIENT_SECRET=$RIG_OAUTH_CLIENT_SECRET"
    echo "RIG_OAUTH_PUBLIC_CLIENT_ID=$RIG_OAUTH_PUBLIC_CLIENT_ID"
    echo "RIG_OAUTH_DENY_HINT=$RIG_OAUTH_DENY_HINT"
    echo "RIG_OAUTH_TEST_TOKEN_URL=$RIG_OAUTH_URL/test/token"
    echo "RIG_OAUTH_TEST_REVOKE_ALL_URL=$RIG_OAUTH_URL/test/revoke-all"
    echo "RIG_OAUTH_TEST_USER_SETTINGS_URL=$RIG_OAUTH_URL/test/user-settings"
    echo "RIG_OAUTH_LOG=$OAUTH_LOG"
    echo "RIG_SMTP2_HOST=$RIG_HOST"
    echo "RIG_SMTP2_STARTTLS_PORT=$RIG_SMTP2_STARTTLS_PORT"
    echo "RIG_SMTP2_TLS_PORT=$RIG_SMTP2_TLS_PORT"
    echo "RIG_SMTP2_NOSIZE_PORT=$RIG_SMTP2_NOSIZE_PORT"
    echo "RIG_SMTP2_SIZE_LIMIT=$RIG_SMTP2_SIZE_LIMIT"
    echo "RIG_SMTP2_BUSY_RCPT=$RIG_SMTP2_BUSY_RCPT"
    echo "RIG_SMTP2_NOUSER_RCPT=$RIG_SMTP2_NOUSER_RCPT"
    echo "RIG_SMTP2_SPOOL=$SMTP2_SPOOL"
    echo "RIG_SMTP2_LOG=$SMTP2_LOG"
    echo "RIG_DNS=$RIG_DNS"
    echo "RIG_DNS_PORT=$RIG_DNS_PORT"
    echo "RIG_AUTOCONFIG_PORT=$RIG_AUTOCONFIG_PORT"
    echo "RIG_AUTOCONFIG_CERT=$RIG_TLS/web.pem"
    echo "RIG_DISCOVER_WORKSPACE_DOMAIN=$RIG_DISCOVER_WORKSPACE_DOMAIN"
    echo "RIG_DISCOVER_M365_DOMAIN=$RIG_DISCOVER_M365_DOMAIN"
    echo "RIG_DISCOVER_SRV_DOMAIN=$RIG_DISCOVER_SRV_DOMAIN"
    echo "RIG_DISCOVER_AUTOCONFIG_DOMAIN=$RIG_DISCOVER_AUTOCONFIG_DOMAIN"
    echo "RIG_DISCOVER_BROKEN_DOMAIN=$RIG_DISCOVER_BROKEN_DOMAIN"
    echo "RIG_DISCOVER_HOSTILE_DOMAIN=$RIG_DISCOVER_HOSTILE_DOMAIN"
    echo "RIG_DISCOVER_PRIVATE_DOMAIN=$RIG_DISCOVER_PRIVATE_DOMAIN"
    echo "RIG_DNSMASQ_LOG=$DNSMASQ_LOG"
    echo "RIG_NGINX_LOG=$NGINX_LOG"
    echo "RIG_NGINX_ACCESS_LOG=$NGINX_ACCESS_LOG"
} >"$RIG_ENV.tmp"
mv -f "$RIG_ENV.tmp" "$RIG_ENV"
echo "$fingerprint" >"$RIG_FINGERPRINT"

rig_log "up: dovecot pid $(cat "$DOVECOT_PIDFILE"), postfix pid $(cat "$POSTFIX_PIDFILE"), oauth2 pid $(cat "$OAUTH_PIDFILE"), smtp2 pid $(cat "$SMTP2_PIDFILE"), dnsmasq pid $(cat "$DNSMASQ_PIDFILE"), nginx pid $(cat "$NGINX_PIDFILE"); env in $RIG_ENV"
