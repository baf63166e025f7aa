# Shared definitions for the mailplug test rig scripts (sourced, not run).
# shellcheck shell=bash

RIG_DIR=${MAILPLUG_RIG_DIR:-/tmp/mailplug-rig}
# Where these scripts live (tests/rig), for the OAuth2 server's sources.
RIG_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

rig_log() { printf 'rig: %s\n' "$*" >&2; }
rig_die() { printf 'rig: error: %s\n' "$*" >&2; exit 1; }

# The run dir ends up in config files and in rig.env unquoted: keep it to safe characters.
[[ "$RIG_DIR" =~ ^/[A-Za-z0-9._/-]+$ ]] \
    || rig_die "MAILPLUG_RIG_DIR must be an absolute path of [A-Za-z0-9._/-] characters (got '$RIG_DIR')"
RIG_DIR=${RIG_DIR%/}
[[ -n "$RIG_DIR" && "$RIG_DIR" != "/" ]] || rig_die "MAILPLUG_RIG_DIR must not be /"

# ---- fixed facts -------------------------------------------------------------------------
RIG_HOST=localhost
RIG_IP=127.0.0.1
RIG_NOTLS_IP=127.0.0.2
RIG_DOMAIN=example.test

RIG_IMAP_STARTTLS_PORT=10143
RIG_IMAPS_PORT=10993
RIG_POP3_STLS_PORT=10110
RIG_POP3S_PORT=10995
RIG_SUBMISSION_PORT=10587
RIG_SMTPS_PORT=10465
RIG_IMAP_NOTLS_HOST=$RIG_NOTLS_IP
RIG_IMAP_NOTLS_PORT=10144
RIG_POP3_NOTLS_HOST=$RIG_NOTLS_IP
RIG_POP3_NOTLS_PORT=10111
RIG_SMTP_NOTLS_HOST=$RIG_IP
RIG_SMTP_NOTLS_PORT=10588

# OAuth2 authorization server (tests/rig/oauth/server.mjs), plain HTTP on loopback only.
RIG_OAUTH_PORT=10800
RIG_OAUTH_URL=http://$RIG_IP:$RIG_OAUTH_PORT
RIG_OAUTH_CLIENT_ID=mailplug-test
RIG_OAUTH_CLIENT_SECRET='Client-Secret-5Rq!'
RIG_OAUTH_PUBLIC_CLIENT_ID=mailplug-public
RIG_OAUTH_DENY_HINT=deny@example.test

# A second SMTP submission server (tests/rig/smtp2/server.mjs, nodemailer's smtp-server), for
# the refusals Postfix does not produce on demand: a 451 and a 550 recipient, a small SIZE limit.
RIG_SMTP2_STARTTLS_PORT=10589
RIG_SMTP2_TLS_PORT=10466
RIG_SMTP2_NOSIZE_PORT=10590
RIG_SMTP2_SIZE_LIMIT=1048576
RIG_SMTP2_BUSY_RCPT=busy@smtp2.test
RIG_SMTP2_NOUSER_RCPT=nouser@smtp2.test

# Discovery tests: a DNS server (dnsmasq) with the records of tests/rig/dns/records.conf, and a
# web server (nginx) with the autoconfig documents of tests/rig/dns/www over HTTPS on port 443.
RIG_DNS_PORT=10053
RIG_DNS=$RIG_IP:$RIG_DNS_PORT
RIG_AUTOCONFIG_PORT=443
RIG_DISCOVER_WORKSPACE_DOMAIN=workspace-customer.test
RIG_DISCOVER_M365_DOMAIN=m365-customer.test
RIG_DISCOVER_SRV_DOMAIN=srv-customer.test
RIG_DISCOVER_AUTOCONFIG_DOMAIN=autoconfig-customer.test
RIG_DISCOVER_BROKEN_DOMAIN=broken-autoconfig.test
RIG_DISCOVER_HOSTILE_DOMAIN=hostile-autoconfig.test
RIG_DISCOVER_PRIVATE_DOMAIN=private-autoconfig.test
# The names nginx serves (its certificate's names); each has a directory in tests/rig/dns/www.
RIG_AUTOCONFIG_NAMES=(
    "autoconfig.$RIG_DISCOVER_AUTOCONFIG_DOMAIN" "$RIG_DISCOVER_AUTOCONFIG_DOMAIN"
    "autoconfig.$RIG_DISCOVER_BROKEN_DOMAIN" "$RIG_DISCOVER_BROKEN_DOMAIN"
    "autoconfig.$RIG_DISCOVER_HOSTILE_DOMAIN" "$RIG_DISCOVER_HOSTILE_DOMAIN"
)

# name:password (login = name@example.test). Passwords are distinctive so that tests can grep
# any output for them; they must not contain ':' (passwd-file) or shell-special characters
# other than '!' (rig.env is sourced unquoted).
RIG_USERS=(
    "support:Support-Pw-7Qz!"
    "customer:Customer-Pw-4Kx!"
    "agent:Agent-Pw-9Lm!"
    "sales:Sales-Pw-2Vb!"
    # One mailbox per inbound integration test, so tests running in parallel never share one.
    "box1:Box1-Pw-3Hq!" "box2:Box2-Pw-5Jr!" "box3:Box3-Pw-6Ks!" "box4:Box4-Pw-7Lt!"
    "box5:Box5-Pw-8Mu!" "box6:Box6-Pw-9Nv!" "box7:Box7-Pw-2Pw!" "box8:Box8-Pw-3Qx!"
    "box9:Box9-Pw-4Ry!" "box10:Box10-Pw-5Sz!" "box11:Box11-Pw-6Ta!" "box12:Box12-Pw-7Ub!"
    "box13:Box13-Pw-8Vc!" "box14:Box14-Pw-9Wd!" "box15:Box15-Pw-2Xe!" "box16:Box16-Pw-3Yf!"
    "box17:Box17-Pw-2Pr!" "box18:Box18-Pw-2Gq!" "box19:Box19-Pw-9Jw!" "box20:Box20-Pw-4Bs!"
    "box21:Box21-Pw-9Lc!" "box22:Box22-Pw-5Zm!" "box23:Box23-Pw-2Pe!" "box24:Box24-Pw-7Np!"
    "box25:Box25-Pw-6Xj!" "box26:Box26-Pw-9Fx!" "box27:Box27-Pw-6Xm!" "box28:Box28-Pw-4Qh!"
    "box29:Box29-Pw-9Vn!" "box30:Box30-Pw-2Ua!" "box31:Box31-Pw-5Eg!" "box32:Box32-Pw-6Tm!"
    "box33:Box33-Pw-5Lx!" "box34:Box34-Pw-9Pr!" "box35:Box35-Pw-3Wu!" "box36:Box36-Pw-7Sf!"
    "box37:Box37-Pw-5Ph!" "box38:Box38-Pw-2Br!" "box39:Box39-Pw-6Vx!" "box40:Box40-Pw-3Tc!"
    # The service's tests (issue 13 on): several tenants with several mailboxes each.
    "box41:Box41-Pw-4El!" "box42:Box42-Pw-8Li!" "box43:Box43-Pw-5La!" "box44:Box44-Pw-2Ys!"
    "box45:Box45-Pw-2Gz!" "box46:Box46-Pw-5Jv!" "box47:Box47-Pw-7Iv!" "box48:Box48-Pw-2Jx!"
    "box49:Box49-Pw-2Ns!" "box50:Box50-Pw-8Hi!" "box51:Box51-Pw-9Dl!" "box52:Box52-Pw-9Gy!"
    "box53:Box53-Pw-5Sk!" "box54:Box54-Pw-6Cw!" "box55:Box55-Pw-9Cb!" "box56:Box56-Pw-8Qd!"
    "box57:Box57-Pw-3Ln!" "box58:Box58-Pw-5Zr!" "box59:Box59-Pw-2Jo!" "box60:Box60-Pw-7As!"
    "box61:Box61-Pw-4Yy!" "box62:Box62-Pw-4Hk!" "box63:Box63-Pw-6Tk!" "box64:Box64-Pw-9Fi!"
    "box65:Box65-Pw-7As!" "box66:Box66-Pw-5Yv!" "box67:Box67-Pw-6Ll!" "box68:Box68-Pw-2Aj!"
    "box69:Box69-Pw-4Ga!" "box70:Box70-Pw-6Rv!" "box71:Box71-Pw-6So!" "box72:Box72-Pw-6Cw!"
    "box73:Box73-Pw-5Ib!" "box74:Box74-Pw-6Zm!" "box75:Box75-Pw-2Yf!" "box76:Box76-Pw-7Gb!"
    "box77:Box77-Pw-7Oz!" "box78:Box78-Pw-7Li!" "box79:Box79-Pw-4Qg!" "box80:Box80-Pw-8Tx!"
)
# More boxes for the service's and the admin page's tests (box81 .. box100).
for ((rig_n = 81; rig_n <= 100; rig_n++)); do
    RIG_USERS+=("box$rig_n:Box$rig_n-Pw-$((rig_n * 3 % 10))Xb!")
done
# The scale-out test (issue 14): 200 mailboxes served by three nodes (scale1 .. scale200).
for ((rig_n = 1; rig_n <= 200; rig_n++)); do
    RIG_USERS+=("scale$rig_n:Scale$rig_n-Pw-$((rig_n * 7 % 10))Sk!")
done
unset rig_n

# ---- layout of the run dir -------------------------------------------------------------
RIG_MARKER=$RIG_DIR/.mailplug-rig
RIG_LOCK=$RIG_DIR/.lock
RIG_FINGERPRINT=$RIG_DIR/.fingerprint
RIG_ENV=$RIG_DIR/rig.env
RIG_PIDS=$RIG_DIR/pids
RIG_LOGS=$RIG_DIR/logs
RIG_TLS=$RIG_DIR/tls
RIG_CA=$RIG_TLS/ca.pem
RIG_MAIL=$RIG_DIR/mail
RIG_BIN=$RIG_DIR/bin

DOVECOT_DIR=$RIG_DIR/dovecot
DOVECOT_CONF=$DOVECOT_DIR/dovecot.conf
DOVECOT_USERS=$DOVECOT_DIR/users
DOVECOT_BASE=$DOVECOT_DIR/run
DOVECOT_STATE=$DOVECOT_DIR/state
DOVECOT_LOG=$RIG_LOGS/dovecot.log
DOVECOT_PIDFILE=$RIG_PIDS/dovecot.pid

POSTFIX_DIR=$RIG_DIR/postfix
POSTFIX_CONF=$POSTFIX_DIR/etc
POSTFIX_SPOOL=$POSTFIX_DIR/spool
POSTFIX_DATA=$POSTFIX_DIR/data
POSTFIX_LOG=$RIG_LOGS/postfix.log
POSTFIX_PIDFILE=$RIG_PIDS/postfix.pid

# The OAuth2 server runs from a copy of tests/rig/oauth with its node_modules (npm ci), kept
# across fresh starts (reinstalled only when package.json / package-lock.json / node change).
OAUTH_DIR=$RIG_DIR/oauth
OAUTH_SERVER=$OAUTH_DIR/server.mjs
OAUTH_USERS=$OAUTH_DIR/users
OAUTH_LOG=$RIG_LOGS/oauth.log
OAUTH_PIDFILE=$RIG_PIDS/oauth.pid

SMTP2_DIR=$RIG_DIR/smtp2
SMTP2_SERVER=$SMTP2_DIR/server.mjs
SMTP2_USERS=$SMTP2_DIR/users
SMTP2_SPOOL=$SMTP2_DIR/spool
SMTP2_LOG=$RIG_LOGS/smtp2.log
SMTP2_PIDFILE=$RIG_PIDS/smtp2.pid

DNS_DIR=$RIG_DIR/dns
DNSMASQ_CONF=$DNS_DIR/records.conf
DNSMASQ_LOG=$RIG_LOGS/dnsmasq.log
DNSMASQ_PIDFILE=$RIG_PIDS/dnsmasq.pid
WEB_DIR=$RIG_DIR/web
NGINX_CONF=$WEB_DIR/nginx.conf
NGINX_LOG=$RIG_LOGS/nginx-error.log
NGINX_ACCESS_LOG=$RIG_LOGS/nginx-access.log
NGINX_PIDFILE=$RIG_PIDS/nginx.pid

# ---- helpers -----------------------------------------------------------------------------

# Does /proc/PID belong to the Dovecot master that this rig started?
rig_is_our_dovecot() {
    local pid=$1 comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 1
    [[ "$comm" == dovecot ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$DOVECOT_CONF"
}

# Does /proc/PID belong to the Postfix master that this rig started?
rig_is_our_postfix() {
    local pid=$1 comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 1
    [[ "$comm" == master ]] || return 1
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -- "MAIL_CONFIG=$POSTFIX_CONF"
}

# Does /proc/PID belong to the OAuth2 server that this rig started? (node running this rig's
# copy of server.mjs, with --rig-dir=$RIG_DIR)
rig_is_our_oauth() {
    local pid=$1 comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 1
    [[ "$comm" == node ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$OAUTH_SERVER" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--rig-dir=$RIG_DIR"
}

# Does /proc/PID belong to the second SMTP server that this rig started?
rig_is_our_smtp2() {
    local pid=$1 comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 1
    [[ "$comm" == node ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$SMTP2_SERVER" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--rig-dir=$RIG_DIR"
}

# Does /proc/PID belong to the dnsmasq that this rig started (with this rig's records)?
rig_is_our_dnsmasq() {
    local pid=$1 comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 1
    [[ "$comm" == dnsmasq ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--conf-file=$DNSMASQ_CONF"
}

# Does /proc/PID belong to the nginx master that this rig started? (Its title keeps the command
# line, "nginx: master process /usr/sbin/nginx -c CONF ...", as one string.)
rig_is_our_nginx() {
    local pid=$1 comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r comm 2>/dev/null <"/proc/$pid/comm" || return 1
    [[ "$comm" == nginx ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "master process .* -c $NGINX_CONF\( \|\$\)"
}

# PIDs of this rig's Dovecot / Postfix masters: from the PID files, plus a scan of /proc for
# masters started with this rig's config (in case a PID file was lost). Nothing else matches.
rig_dovecot_pids() {
    local pid p f
    {
        for f in "$DOVECOT_PIDFILE" "$DOVECOT_BASE/master.pid"; do
            pid=$(head -n1 "$f" 2>/dev/null | tr -d ' ') || true
            if rig_is_our_dovecot "$pid"; then echo "$pid"; fi
        done
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            if rig_is_our_dovecot "$pid"; then echo "$pid"; fi
        done
    } 2>/dev/null | sort -un
}

rig_postfix_pids() {
    local pid p f
    {
        for f in "$POSTFIX_PIDFILE" "$POSTFIX_SPOOL/pid/master.pid"; do
            pid=$(head -n1 "$f" 2>/dev/null | tr -d ' ') || true
            if rig_is_our_postfix "$pid"; then echo "$pid"; fi
        done
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            if rig_is_our_postfix "$pid"; then echo "$pid"; fi
        done
    } 2>/dev/null | sort -un
}

rig_oauth_pids() {
    local pid p
    {
        pid=$(head -n1 "$OAUTH_PIDFILE" 2>/dev/null | tr -d ' ') || true
        if rig_is_our_oauth "$pid"; then echo "$pid"; fi
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            if rig_is_our_oauth "$pid"; then echo "$pid"; fi
        done
    } 2>/dev/null | sort -un
}

rig_smtp2_pids() {
    local pid p
    {
        pid=$(head -n1 "$SMTP2_PIDFILE" 2>/dev/null | tr -d ' ') || true
        if rig_is_our_smtp2 "$pid"; then echo "$pid"; fi
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            if rig_is_our_smtp2 "$pid"; then echo "$pid"; fi
        done
    } 2>/dev/null | sort -un
}

rig_dnsmasq_pids() {
    local pid p
    {
        pid=$(head -n1 "$DNSMASQ_PIDFILE" 2>/dev/null | tr -d ' ') || true
        if rig_is_our_dnsmasq "$pid"; then echo "$pid"; fi
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            if rig_is_our_dnsmasq "$pid"; then echo "$pid"; fi
        done
    } 2>/dev/null | sort -un
}

rig_nginx_pids() {
    local pid p
    {
        pid=$(head -n1 "$NGINX_PIDFILE" 2>/dev/null | tr -d ' ') || true
        if rig_is_our_nginx "$pid"; then echo "$pid"; fi
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            if rig_is_our_nginx "$pid"; then echo "$pid"; fi
        done
    } 2>/dev/null | sort -un
}

# rig_port_open HOST PORT: does something accept TCP connections there?
rig_port_open() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# rig_port_listening HOST PORT: is a TCP socket listening there? Asks `ss` (no connection, so no
# noise in the servers' logs); without `ss`, connects.
rig_port_listening() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn "sport = :$2" 2>/dev/null | awk '{print $4}' | grep -qxF -- "$1:$2"
    else
        rig_port_open "$1" "$2"
    fi
}

# "host port" lines of every listener the rig serves.
rig_listeners() {
    local p
    for p in "$RIG_IMAP_STARTTLS_PORT" "$RIG_IMAPS_PORT" "$RIG_POP3_STLS_PORT" "$RIG_POP3S_PORT" \
             "$RIG_SUBMISSION_PORT" "$RIG_SMTPS_PORT"; do
        echo "$RIG_IP $p"
    done
    echo "$RIG_IMAP_NOTLS_HOST $RIG_IMAP_NOTLS_PORT"
    echo "$RIG_POP3_NOTLS_HOST $RIG_POP3_NOTLS_PORT"
    echo "$RIG_SMTP_NOTLS_HOST $RIG_SMTP_NOTLS_PORT"
    echo "$RIG_IP $RIG_OAUTH_PORT"
    echo "$RIG_IP $RIG_SMTP2_STARTTLS_PORT"
    echo "$RIG_IP $RIG_SMTP2_TLS_PORT"
    echo "$RIG_IP $RIG_SMTP2_NOSIZE_PORT"
    echo "$RIG_IP $RIG_DNS_PORT"
    echo "$RIG_IP $RIG_AUTOCONFIG_PORT"
}

# Send SIGTERM to PIDs, wait up to SECONDS for them to exit, then SIGKILL the rest.
rig_terminate() {
    local seconds=$1; shift
    local pids=("$@") pid alive i
    [[ ${#pids[@]} -gt 0 ]] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < seconds * 10; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [[ $alive -eq 0 ]] && return 0
        sleep 0.1
    done
    rig_log "still running after ${seconds}s, killing: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.2
}

# Stop whatever this rig started (and nothing else). All are stopped at once: Dovecot alone
# takes 2-3 s to exit.
rig_stop() {
    local dpids ppids opids npids
    mapfile -t dpids < <(rig_dovecot_pids)
    mapfile -t ppids < <(rig_postfix_pids)
    mapfile -t opids < <(rig_oauth_pids; rig_smtp2_pids)
    # dnsmasq and the nginx master (which takes its workers along)
    mapfile -t npids < <(rig_dnsmasq_pids; rig_nginx_pids)
    if [[ ${#npids[@]} -gt 0 ]]; then
        rig_log "stopping dnsmasq and nginx (pid ${npids[*]})"
        kill -TERM "${npids[@]}" 2>/dev/null || true
    fi
    if [[ ${#opids[@]} -gt 0 ]]; then
        rig_log "stopping the oauth2 and smtp2 servers (pid ${opids[*]})"
        kill -TERM "${opids[@]}" 2>/dev/null || true
    fi
    if [[ ${#dpids[@]} -gt 0 ]]; then
        rig_log "stopping dovecot (pid ${dpids[*]})"
        # SIGTERM to the master is what `doveadm stop` does, without needing a parsable config.
        kill -TERM "${dpids[@]}" 2>/dev/null || true
    fi
    if [[ ${#ppids[@]} -gt 0 ]]; then
        rig_log "stopping postfix (pid ${ppids[*]})"
        # `postfix stop` tells the master to stop; rig_terminate signals it if the config is broken.
        MAIL_CONFIG=$POSTFIX_CONF timeout 20 postfix -c "$POSTFIX_CONF" stop >/dev/null 2>&1 </dev/null || true
    fi
    rig_terminate 15 "${dpids[@]}" "${ppids[@]}" "${opids[@]}" "${npids[@]}"
    rm -f "$DOVECOT_PIDFILE" "$POSTFIX_PIDFILE" "$OAUTH_PIDFILE" "$SMTP2_PIDFILE" "$DNSMASQ_PIDFILE" "$NGINX_PIDFILE"
}

# Wait until no rig port accepts connections any more (children may hold listeners briefly).
rig_wait_ports_free() {
    local host port busy i
    for ((i = 0; i < 100; i++)); do
        busy=()
        while read -r host port; do
            if rig_port_listening "$host" "$port"; then busy+=("$host:$port"); fi
        done < <(rig_listeners)
        [[ ${#busy[@]} -eq 0 ]] && return 0
        sleep 0.1
    done
    printf '%s\n' "${busy[@]}"
    return 1
}

# Take the rig's lock (serialises up.sh / down.sh run concurrently, e.g. by parallel tests).
rig_lock() {
    mkdir -p "$RIG_DIR"
    exec 9>"$RIG_LOCK"
    flock -w 180 9 || rig_die "timed out waiting for the rig lock $RIG_LOCK"
}

# Full login name for a user given as "support" or "support@example.test".
rig_login() {
    local u=$1
    [[ "$u" == *@* ]] || u="$u@$RIG_DOMAIN"
    printf '%s\n' "$u"
}
