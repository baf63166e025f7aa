// A second SMTP submission server for the mailplug test rig, next to Postfix: nodemailer's
// smtp-server, on loopback only. It answers the way a provider's submission server answers the
// cases Postfix in the rig does not produce on demand:
//   - STARTTLS port (--starttls-port): AUTH is not offered before TLS; MAIL before AUTH gets 530.
//   - implicit-TLS port (--tls-port).
//   - STARTTLS port that does not advertise SIZE (--nosize-port), so that a client learns of
//     the limit only from the 552 answer to its DATA, as with servers that do not announce it.
//   - AUTH PLAIN / LOGIN for the rig's users (--users: "login:password" lines).
//   - SIZE limit (--size): a MAIL FROM with a larger SIZE= or a bigger DATA gets 552.
//   - RCPT TO busy@smtp2.test: "451 4.2.1 Mailbox busy"; nouser@smtp2.test: "550 5.1.1 No such
//     user"; every other recipient is accepted.
// Every accepted message is written to --spool as <id>.eml (the DATA bytes after dot-unstuffing,
// exactly as received) and then <id>.json (envelope), each through a temp file and a rename.
import { SMTPServer } from 'smtp-server';
import { readFileSync, writeFileSync, renameSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
    const m = /^--([a-z-]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`bad argument ${a}`);
    return [m[1], m[2]];
}));
for (const k of ['host', 'starttls-port', 'tls-port', 'nosize-port', 'key', 'cert', 'users', 'spool', 'size', 'rig-dir']) {
    if (!args[k]) throw new Error(`--${k}= is required`);
}
const size = Number(args.size);
const users = new Map(readFileSync(args.users, 'utf8').split('\n').filter(Boolean).map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1)];
}));
const BUSY = 'busy@smtp2.test';
const NOUSER = 'nouser@smtp2.test';
mkdirSync(args.spool, { recursive: true });

function refusal(code, text) {
    const err = new Error(text);
    err.responseCode = code;
    return err;
}

function options(secure, hideSize = false) {
    return {
        secure,
        hideSize,
        key: readFileSync(args.key),
        cert: readFileSync(args.cert),
        name: 'smtp2.rig.test',
        banner: 'mailplug rig smtp2 (smtp-server)',
        size,
        authMethods: ['PLAIN', 'LOGIN'],
        allowInsecureAuth: false,
        authOptional: false,
        // Bounded waits, so a stuck test client cannot hold the server.
        socketTimeout: 60 * 1000,
        closeTimeout: 5 * 1000,
        logger: false,
        onAuth(auth, session, callback) {
            const want = users.get(auth.username);
            if (want !== undefined && auth.password === want) {
                return callback(null, { user: auth.username });
            }
            return callback(refusal(535, '5.7.8 Authentication credentials invalid'));
        },
        onRcptTo(address, session, callback) {
            const to = address.address.toLowerCase();
            if (to === BUSY) return callback(refusal(451, '4.2.1 Mailbox busy'));
            if (to === NOUSER) return callback(refusal(550, '5.1.1 No such user'));
            return callback();
        },
        onData(stream, session, callback) {
            const chunks = [];
            stream.on('data', (c) => chunks.push(c));
            stream.on('error', (e) => callback(e));
            stream.on('end', () => {
                if (stream.sizeExceeded) {
                    return callback(refusal(552, '5.3.4 Message size exceeds fixed maximum message size'));
                }
                const raw = Buffer.concat(chunks);
                const id = `${Date.now()}-${randomBytes(6).toString('hex')}`;
                const head = raw.subarray(0, Math.min(raw.length, 64 * 1024)).toString('latin1');
                const mid = /^message-id:\s*<?([^>\r\n]*)>?/im.exec(head);
                const envelope = {
                    id,
                    user: session.user,
                    mail_from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
                    rcpt_to: session.envelope.rcptTo.map((r) => r.address),
                    size: raw.length,
                    message_id: mid ? mid[1].trim() : null,
                };
                try {
                    const eml = join(args.spool, `${id}.eml`);
                    writeFileSync(`${eml}.tmp`, raw);
                    renameSync(`${eml}.tmp`, eml);
                    const json = join(args.spool, `${id}.json`);
                    writeFileSync(`${json}.tmp`, JSON.stringify(envelope));
                    renameSync(`${json}.tmp`, json);
                } catch (e) {
                    return callback(refusal(451, '4.3.0 Could not store the message'));
                }
                return callback(null, `2.0.0 Ok: queued as ${id}`);
            });
        },
    };
}

const plain = new SMTPServer(options(false));
const tls = new SMTPServer(options(true));
const nosize = new SMTPServer(options(false, true));
for (const s of [plain, tls, nosize]) s.on('error', (e) => console.error(`smtp2: ${e.message}`));
plain.listen(Number(args['starttls-port']), args.host, () => {
    tls.listen(Number(args['tls-port']), args.host, () => {
        nosize.listen(Number(args['nosize-port']), args.host, () => {
            console.log(`smtp2: listening on ${args.host}:${args['starttls-port']} (STARTTLS), ${args['tls-port']} (TLS) and ${args['nosize-port']} (STARTTLS, SIZE not advertised)`);
        });
    });
});
