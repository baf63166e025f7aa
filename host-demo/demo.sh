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
printf '%s' "$RIG_AGENT_PASS" > "$DEMO/agent.pw"
chmod 600 "$DEMO"/*.pw

# The contact center's tenant: the support mailbox over IMAP (TLS on); replies go out through
# the queue's SMTP account agent@ (submission with STARTTLS, TLS off), which may send on
# behalf of support@ as with Microsoft 365's "Send on Behalf" permission.
cat > "$DEMO/tenant.toml" <<TOML
tenant = "demo"
licensed = true
extra_ca_file = "$RIG_CA"
database = "demo.sqlite3"

[[mailbox]]
name = "support"
address = "$RIG_SUPPORT_USER"
display_name = "ACME Support"
protocol = "imap"
host = "$RIG_HOST"
port = $RIG_IMAPS_PORT
tls = true
username = "$RIG_SUPPORT_USER"
password_file = "support.pw"

[[queue]]
name = "support"
mailboxes = ["support"]
send_permission = "send-on-behalf"
[queue.smtp]
provider = "microsoft"
host = "$RIG_HOST"
port = $RIG_SUBMISSION_PORT
tls = false
username = "$RIG_AGENT_USER"
password_file = "agent.pw"
TOML

# The customer's own mail program, played by a second tenant that only sends.
cat > "$DEMO/customer.toml" <<TOML
tenant = "customer"
licensed = true
extra_ca_file = "$RIG_CA"
database = "customer.sqlite3"

[[mailbox]]
name = "inbox"
address = "$RIG_CUSTOMER_USER"
protocol = "imap"
host = "$RIG_HOST"
port = $RIG_IMAPS_PORT
tls = true
username = "$RIG_CUSTOMER_USER"
password_file = "customer.pw"

[[queue]]
name = "mail"
[queue.smtp]
host = "$RIG_HOST"
port = $RIG_SMTPS_PORT
tls = true
username = "$RIG_CUSTOMER_USER"
password_file = "customer.pw"
TOML

step "the admin's \"test connection\" button: every step of the support mailbox and queue (mailplug check)"
"$MAILPLUG_BIN" check --config "$DEMO/tenant.toml"

step "connecting the mailboxes: the first fetch imports no old mail (first_sync = new-only)"
"$MAILPLUG_BIN" fetch --config "$DEMO/tenant.toml" --mailbox support
"$MAILPLUG_BIN" fetch --config "$DEMO/customer.toml" --mailbox inbox

SUBJECT="Order 4711 has not arrived ($(date +%H:%M:%S))"
step "the customer writes to $RIG_SUPPORT_USER"
"$MAILPLUG_BIN" send --config "$DEMO/customer.toml" --queue mail --to "$RIG_SUPPORT_USER" \
  --subject "$SUBJECT" --body $'Hello support,\n\nmy order 4711 has not arrived yet.\n\nThanks, a customer'

step "mailplug fetches the support mailbox over IMAP (implicit TLS) into $DEMO/demo.sqlite3"
for _ in $(seq 1 40); do
  out=$("$MAILPLUG_BIN" fetch --config "$DEMO/tenant.toml" --mailbox support --out "$DEMO/messages" --json)
  if [ -n "$out" ]; then break; fi
  sleep 0.25
done
printf '%s\n' "$out"
ID=$(printf '%s\n' "$out" | tail -n 1 | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
file=$(ls -t "$DEMO/messages/support/"*.eml | head -n 1)
step "the fetched message ($file)"
cat "$file"
echo
step "before sending: what will the customer see? (mailplug plan-from)"
"$MAILPLUG_BIN" plan-from --config "$DEMO/tenant.toml" --queue support --mailbox support

step "an agent answers message $ID through the queue's SMTP server (STARTTLS)"
"$MAILPLUG_BIN" send --config "$DEMO/tenant.toml" --queue support --reply-to-message "$ID" \
  --body $'Hello,\n\nyour parcel left our warehouse today.\n\nYour support team'

step "the customer's mailbox receives the reply, threaded"
for _ in $(seq 1 40); do
  reply=$("$MAILPLUG_BIN" fetch --config "$DEMO/customer.toml" --mailbox inbox --out "$DEMO/customer-messages")
  if [ -n "$reply" ]; then break; fi
  sleep 0.25
done
printf '%s\n' "$reply"
file=$(ls -t "$DEMO/customer-messages/inbox/"*.eml | head -n 1)
grep -E '^(From|Sender|To|Subject|In-Reply-To|References):' "$file"
step "demo finished"
