"""The load scenario's tenant files for `mailplug serve` (tests/load/measure.py).

TENANTS files of MAILBOXES_PER_TENANT mailboxes each over the load rig's users (user0000 ...):
in every tenant the mailboxes `idle0` ... are IMAP with IDLE (the default), `poll` is IMAP with
`idle = false` and `pop` is POP3, both polled every `poll_secs`; one queue `out` (for replies to any of its mailboxes) to an SMTP sink
(Postfix's smtp-sink, plain TCP on loopback). Passwords go to files of their own (mode 0600).

`python3 tests/load/tenants.py --self-test` checks the generator (no servers needed).
"""

import os
import sys
import tempfile

TENANTS = 100
MAILBOXES_PER_TENANT = 10
# In each tenant: the last two mailboxes are the polled IMAP one and the POP3 one.
KINDS = ["idle"] * (MAILBOXES_PER_TENANT - 2) + ["poll", "pop"]


def mailbox_name(k):
    """The name of a tenant's k-th mailbox (its kind is the name without the digits)."""
    kind = KINDS[k]
    return f"idle{k}" if kind == "idle" else kind


def kind_of(mailbox):
    return mailbox.rstrip("0123456789")


def user(n, domain):
    return f"user{n:04d}@{domain}"


def password(n):
    """As tests/load/up.sh writes them."""
    return f"Load-{n:04d}-pw!"


def private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def tenant_id(t):
    return f"t{t:03d}"


def tenant_toml(t, env, secrets, sink_port, poll_secs):
    """Tenant t's file; writes its password files into `secrets`."""
    domain = env["LOAD_DOMAIN"]
    lines = [
        f'tenant = "{tenant_id(t)}"',
        "licensed = true",
        f'extra_ca_file = "{env["LOAD_CA"]}"',
        "[limits]",
        "reply_timeout_secs = 30",
        "connect_timeout_secs = 10",
    ]
    names = []
    for k in range(MAILBOXES_PER_TENANT):
        n = t * MAILBOXES_PER_TENANT + k
        pw = os.path.join(secrets, f"user{n:04d}.pw")
        private(pw, password(n))
        kind = KINDS[k]
        name = mailbox_name(k)
        names.append(name)
        port = env["LOAD_POP3S_PORT"] if kind == "pop" else env["LOAD_IMAPS_PORT"]
        lines += [
            "[[mailbox]]",
            f'name = "{name}"',
            f'address = "{user(n, domain)}"',
            f'protocol = "{"pop3" if kind == "pop" else "imap"}"',
            'first_sync = "all"',
            f"poll_interval_secs = {poll_secs}",
        ]
        if kind == "poll":
            lines.append("idle = false")
        lines += [
            'host = "localhost"',
            f"port = {port}",
            "tls = true",
            f'username = "{user(n, domain)}"',
            f'password_file = "{pw}"',
        ]
    lines += [
        "[[queue]]",
        'name = "out"',
        "mailboxes = [" + ", ".join(f'"{n}"' for n in names) + "]",
        "[queue.smtp]",
        'host = "127.0.0.1"',
        f"port = {sink_port}",
        "tls = false",
        "insecure_plaintext = true",
        f'username = "{user(t * MAILBOXES_PER_TENANT, domain)}"',
        f'password_file = "{os.path.join(secrets, f"user{t * MAILBOXES_PER_TENANT:04d}.pw")}"',
    ]
    return "\n".join(lines) + "\n"


def write_tenant(tenants_dir, t, text):
    """Written beside and renamed, so a scan of the folder never sees half a file."""
    tmp = os.path.join(tenants_dir, f".{tenant_id(t)}.toml.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(tenants_dir, f"{tenant_id(t)}.toml"))


def mailboxes(tenants=TENANTS):
    """Every (tenant id, mailbox name, kind, user number) of the scenario."""
    out = []
    for t in range(tenants):
        for k in range(MAILBOXES_PER_TENANT):
            out.append((tenant_id(t), mailbox_name(k), KINDS[k], t * MAILBOXES_PER_TENANT + k))
    return out


def self_test():
    env = {"LOAD_DOMAIN": "load.test", "LOAD_CA": "/x/ca.pem", "LOAD_IMAPS_PORT": "1993", "LOAD_POP3S_PORT": "1995"}
    import tomllib

    with tempfile.TemporaryDirectory() as d:
        secrets = os.path.join(d, "secrets")
        os.mkdir(secrets)
        files = [tomllib.loads(tenant_toml(t, env, secrets, 2525, 60)) for t in range(TENANTS)]
        boxes = [m for f in files for m in f["mailbox"]]
        assert len(files) == 100 and len(boxes) == 1000, (len(files), len(boxes))
        users = [m["username"] for m in boxes]
        assert len(set(users)) == 1000 and users[0] == "user0000@load.test" and users[-1] == "user0999@load.test"
        assert len({f["tenant"] for f in files}) == 100
        idle = [m for m in boxes if m["protocol"] == "imap" and m.get("idle", True)]
        poll = [m for m in boxes if m["protocol"] == "imap" and m.get("idle") is False]
        pop = [m for m in boxes if m["protocol"] == "pop3"]
        assert (len(idle), len(poll), len(pop)) == (800, 100, 100), (len(idle), len(poll), len(pop))
        assert all(m["port"] == 1995 for m in pop) and all(m["port"] == 1993 for m in idle + poll)
        for m in boxes:
            n = int(m["username"][4:8])
            with open(m["password_file"]) as f:
                assert f.read() == password(n)
            assert os.stat(m["password_file"]).st_mode & 0o077 == 0, "password files are private"
            assert kind_of(m["name"]) in ("idle", "poll", "pop")
        assert all(f["queue"][0]["mailboxes"] == [m["name"] for m in f["mailbox"]] for f in files), "replies to every mailbox"
        assert all(f["queue"][0]["smtp"]["port"] == 2525 and f["queue"][0]["smtp"]["insecure_plaintext"] for f in files)
        assert [(b[0], b[1], b[2]) for b in mailboxes()[:10]] == [("t000", f"idle{k}", "idle") for k in range(8)] + [
            ("t000", "poll", "poll"),
            ("t000", "pop", "pop"),
        ]
    print("tenants.py self-test: ok (100 files, 1,000 mailboxes: 800 IDLE, 100 polled IMAP, 100 POP3)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    else:
        print(__doc__)
