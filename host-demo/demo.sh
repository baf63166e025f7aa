#!/usr/bin/env bash
# The demo, end to end against local real servers: a customer writes to the support mailbox,
# mailplug fetches it over IMAP and prints it, then an agent's answer goes out over SMTP.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../tests/setup.sh"
source "$MAILPLUG_RIG_DIR/rig.env"

DEMO="$MAILPLUG_RIG_DIR/demo"
mkdir -p "$DEMO"
chmod 700 "$DEMO"
printf '%s' "$RIG_SUPPORT_PASS" > "$DEMO/support.pw"
printf '%s' "$RIG_CUSTOMER_PASS" > "$DEMO/customer.pw"
chmod 600 "$DEMO"/*.pw

# The contact center's tenant: the support mailbox over IMAP (TLS on), replies over SMTP
# submission with STARTTLS (TLS off), as the spec recommends for Gmail.
cat > "$DEMO/tenant.toml" <<TOML
tenant = "demo"
licensed = true
extra_ca_file = "$RIG_CA"
database = "demo.sqlite3"

[[mailbox]]
name = "support"
address = "$RIG_SUPPORT_USER"
protocol = "imap"
host = "$RIG_HOST"
port = $RIG_IMAPS_PORT
tls = true
username = "$RIG_SUPPORT_USER"
password_file = "support.pw"

[[queue]]
name = "support"
mailboxes = ["support"]
[queue.smtp]
host = "$RIG_HOST"
port = $RIG_SUBMISSION_PORT
tls = false
username = "$RIG_SUPPORT_USER"
password_file = "support.pw"
TOML

# The customer's own mail program, played by a second tenant that only sends.
cat > "$DEMO/customer.toml" <<TOML
tenant = "customer"
licensed = true
extra_ca_file = "$RIG_CA"
database = "customer.sqlite3"

[[queue]]
name = "mail"
[queue.smtp]
host = "$RIG_HOST"
port = $RIG_SMTPS_PORT
tls = true
username = "$RIG_CUSTOMER_USER"
password_file = "customer.pw"
TOML

step "connecting the support mailbox: the first fetch imports no old mail (first_sync = new-only)"
"$MAILPLUG_BIN" fetch --config "$DEMO/tenant.toml" --mailbox support

SUBJECT="Order 4711 has not arrived ($(date +%H:%M:%S))"
step "the customer writes to $RIG_SUPPORT_USER"
"$MAILPLUG_BIN" send --config "$DEMO/customer.toml" --queue mail --to "$RIG_SUPPORT_USER" \
  --subject "$SUBJECT" --body $'Hello support,\n\nmy order 4711 has not arrived yet.\n\nThanks, a customer'

step "mailplug fetches the support mailbox over IMAP (implicit TLS) into $DEMO/demo.sqlite3"
for _ in $(seq 1 40); do
  out=$("$MAILPLUG_BIN" fetch --config "$DEMO/tenant.toml" --mailbox support --out "$DEMO/messages")
  if [ -n "$out" ]; then break; fi
  sleep 0.25
done
printf '%s\n' "$out"
file=$(ls -t "$DEMO/messages/support/"*.eml | head -n 1)
step "the fetched message ($file)"
cat "$file"
echo
step "an agent answers through the queue's SMTP server (STARTTLS)"
"$MAILPLUG_BIN" send --config "$DEMO/tenant.toml" --queue support --to "$RIG_CUSTOMER_USER" \
  --subject "Re: $SUBJECT" --body $'Hello,\n\nyour parcel left our warehouse today.\n\nYour support team'
step "demo finished"
