#!/usr/bin/env bash
# The demo, end to end against local real servers: a customer writes to the support mailbox,
# mailplug fetches it over IMAP and prints it, then an agent's answer goes out over SMTP; then
# the same with the always-on service: `mailplug serve` idles on the support mailbox (IMAP
# IDLE), a new message arrives as an event, the agent's reply goes out through the API's
# durable outbox, and SIGTERM stops the service cleanly. Every wait is bounded.
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
password_file = "$DEMO/support.pw"

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
password_file = "$DEMO/agent.pw"
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
password_file = "$DEMO/customer.pw"

[[queue]]
name = "mail"
[queue.smtp]
host = "$RIG_HOST"
port = $RIG_SMTPS_PORT
tls = true
username = "$RIG_CUSTOMER_USER"
password_file = "$DEMO/customer.pw"
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

# ---- The same with the always-on service: mailplug serve --------------------------------------

# A JSON string field (the first one of that name) and a bounded wait: `wait_until SECS WHAT CMD...`
# runs CMD every 0.2 s until it succeeds, and stops the demo with WHAT if it never does.
jstr() { { grep -o "\"$1\":\"[^\"]*\"" || true; } | sed -n '1s/^"[^"]*":"\(.*\)"$/\1/p'; }
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@"; do
    if [ "$SECONDS" -ge "$end" ]; then
      echo "demo: gave up after ${secs} s waiting for: $what (the service's log: $SERVE/serve.log)" >&2
      exit 1
    fi
    sleep 0.2
  done
}
ms_now() { date +%s%3N; }

SERVE="$DEMO/serve"
rm -rf "$SERVE"
mkdir -p "$SERVE/tenants"
chmod 700 "$SERVE"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$SERVE/admin.token"
chmod 600 "$SERVE/admin.token"
TOKEN=$(cat "$SERVE/admin.token")
cp "$DEMO/tenant.toml" "$SERVE/tenants/demo.toml"

step "mailplug serve: the always-on service runs every tenant file of $SERVE/tenants"
"$MAILPLUG_BIN" serve --tenants "$SERVE/tenants" --store "$SERVE/serve.sqlite3" \
  --listen 127.0.0.1:0 --admin-token-file "$SERVE/admin.token" \
  >"$SERVE/stdout" 2>"$SERVE/serve.log" &
SERVE_PID=$!
SSE_PID=
stop_all() {
  if [ -n "$SSE_PID" ]; then kill "$SSE_PID" 2>/dev/null || true; fi
  if kill -0 "$SERVE_PID" 2>/dev/null; then kill -TERM "$SERVE_PID" 2>/dev/null || true; fi
}
trap stop_all EXIT
wait_until 60 "serve to print where it listens" grep -q 'listening on http://' "$SERVE/stdout"
cat "$SERVE/stdout"
API=$(sed -n 's|.*listening on \(http://[^ ]*\).*|\1|p' "$SERVE/stdout")
api() { curl -sS --max-time 30 -H "Authorization: Bearer $TOKEN" "$@"; }
support_idles() { grep -q '"support":{[^}]*"state":"idling"' <<<"$(api "$API/v1/tenants/demo")"; }
wait_until 60 "the service to be ready" curl -sf --max-time 5 -o /dev/null "$API/readyz"
wait_until 60 "the support mailbox to idle (IMAP IDLE)" support_idles
step "the support mailbox's state (GET /v1/tenants/demo): idling on its IMAP connection"
api "$API/v1/tenants/demo" | grep -o '"support":{[^}]*}'

step "the platform listens to the tenant's events (server-sent events: GET /v1/tenants/demo/events)"
curl -sSN --max-time 120 -H "Authorization: Bearer $TOKEN" "$API/v1/tenants/demo/events" >"$SERVE/events.txt" 2>/dev/null &
SSE_PID=$!

SUBJECT2="Order 4712: wrong size ($(date +%H:%M:%S))"
step "the customer writes again: \"$SUBJECT2\""
"$MAILPLUG_BIN" send --config "$DEMO/customer.toml" --queue mail --to "$RIG_SUPPORT_USER" \
  --subject "$SUBJECT2" --body $'Hello support,\n\nthe shoes of order 4712 are one size too small.\n\nThanks, a customer'
sent_ms=$(ms_now)
stored_event() { { grep '^data:' "$SERVE/events.txt" | grep '"kind":"message.stored"' | grep -F -- "$SUBJECT2" || true; } | sed -n 1p; }
has_stored_event() { [ -n "$(stored_event)" ]; }
wait_until 30 "the message.stored event (IMAP IDLE)" has_stored_event
took=$(( $(ms_now) - sent_ms ))
step "it arrives by IMAP IDLE and is stored: its event on the stream ${took} ms after the customer's server accepted the message"
stored_event
MSG=$(stored_event | jstr message)
step "the message in the API (GET /v1/tenants/demo/messages)"
api "$API/v1/tenants/demo/messages" | grep -o '{[^{}]*'"\"id\":${MSG#db:},"'[^{}]*}'

step "the agent's reply to $MSG goes into the durable outbox (POST /v1/tenants/demo/queues/support/outbox)"
row=$(api -X POST -H 'Content-Type: application/json' \
  --data "{\"reply_to_message\":\"$MSG\",\"text\":\"Hello,\\n\\nplease send them back; the right size is on its way.\\n\\nYour support team\\n\"}" \
  -w '\n%{http_code}' "$API/v1/tenants/demo/queues/support/outbox")
code=$(printf '%s\n' "$row" | tail -n 1)
row=$(printf '%s\n' "$row" | sed '$d')
printf '%s\n' "$row"
if [ "$code" != 201 ]; then echo "demo: the outbox refused the reply (HTTP $code)" >&2; exit 1; fi
OUT=$(printf '%s\n' "$row" | jstr id)
REPLY_MID=$(printf '%s\n' "$row" | jstr message_id)
REPLY_MID=${REPLY_MID#<}
REPLY_MID=${REPLY_MID%>}
delivered() { grep -q '"state":"delivered"' <<<"$(api "$API/v1/tenants/demo/outbox/$OUT")"; }
wait_until 60 "outbox row $OUT to be delivered" delivered
row=$(api "$API/v1/tenants/demo/outbox/$OUT")
jnum() { { grep -o "\"$1\":[0-9]*" || true; } | sed -n '1s/^"[^"]*"://p'; }
took=$(( $(jnum updated_at_ms <<<"$row") - $(jnum created_at_ms <<<"$row") ))
step "the queue's sender delivered it through SMTP submission, ${took} ms after it was committed"
printf '%s\n' "$row"
outbox_events() { { grep '^data:' "$SERVE/events.txt" | grep '"kind":"outbox.state-changed"' | grep -F "\"$OUT\"" || true; }; }
has_delivered_event() { grep -q '"state":"delivered"' <<<"$(outbox_events)"; }
wait_until 15 "the delivered event of $OUT on the event stream" has_delivered_event
step "the outbox.state-changed events of $OUT on the stream"
outbox_events

step "the customer's mailbox receives the reply, threaded"
reply_arrived() {
  reply=$("$MAILPLUG_BIN" fetch --config "$DEMO/customer.toml" --mailbox inbox --out "$DEMO/customer-messages" --json)
  [ -n "$reply" ] && grep -qF -- "$SUBJECT2" <<<"$reply"
}
wait_until 30 "the reply in the customer's mailbox" reply_arrived
file=$(ls -t "$DEMO/customer-messages/inbox/"*.eml | head -n 1)
grep -E '^(From|Sender|To|Subject|Message-ID|In-Reply-To):' "$file"
if ! grep -qiF -- "$REPLY_MID" "$file"; then
  echo "demo: the message in the customer's mailbox is not outbox row $OUT (Message-ID $REPLY_MID)" >&2
  exit 1
fi

step "SIGTERM: the service logs out of IDLE, finishes what is in flight and exits"
kill "$SSE_PID" 2>/dev/null || true
SSE_PID=
term_ms=$(ms_now)
kill -TERM "$SERVE_PID"
stopped() { ! kill -0 "$SERVE_PID" 2>/dev/null; }
wait_until 30 "serve to exit after SIGTERM" stopped
status=0
wait "$SERVE_PID" || status=$?
trap - EXIT
if [ "$status" != 0 ]; then
  echo "demo: serve exited with status $status after SIGTERM (its log: $SERVE/serve.log)" >&2
  exit 1
fi
echo "exit status 0, $(( $(ms_now) - term_ms )) ms after SIGTERM; the last lines of its log:"
tail -n 3 "$SERVE/serve.log"
step "demo finished"
