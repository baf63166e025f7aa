"""Send peer for `mailplug-bench send`: Python's smtplib submitting the same composed messages
over one connection (login once, sendmail per message). Prints the elapsed seconds."""
import base64
import os
import smtplib
import sys
import time

host, port, user, password, to, folder = sys.argv[1:7]
names = sorted(n for n in os.listdir(folder) if n.endswith(".eml"))
messages = []
for n in names:
    with open(os.path.join(folder, n), "rb") as f:
        messages.append(f.read())
start = time.perf_counter()
s = smtplib.SMTP(host, int(port))
s.ehlo("bench")
# smtp-sink answers AUTH with 250 rather than 235, which smtp.login refuses: the same
# AUTH PLAIN exchange by hand, accepting any 2xx.
code, resp = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())
assert 200 <= code < 300, (code, resp)
for m in messages:
    refused = s.sendmail(user, [to], m)
    assert not refused, refused
s.quit()
print(f"{time.perf_counter() - start:.6f}")
