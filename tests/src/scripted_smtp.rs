//! A scripted SMTP submission server on 127.0.0.1:0 (plain TCP, AUTH PLAIN accepted) for the
//! outbox's faults a real server does not produce on demand: the n-th final dot it receives,
//! counted across connections, gets the n-th answer of its plan (then 250). It records every
//! message's data as received (dot-stuffing undone) and which answer each got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The answer to one final dot.
#[derive(Clone, Debug, PartialEq)]
pub enum DataAnswer {
    /// 250.
    Accept,
    /// This reply line (without CRLF), e.g. "451 4.3.0 Try again later".
    Reply(String),
    /// Close the connection without answering.
    Cut,
    /// Never answer; keep the connection open until the client goes away.
    Stall,
}

/// One message's data as the server received it, and the answer it got.
#[derive(Clone, Debug)]
pub struct Received {
    pub data: Vec<u8>,
    pub answer: DataAnswer,
}

pub struct ScriptedSmtp {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedSmtp {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl ScriptedSmtp {
    /// Every message received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
    /// How many times a message with this Message-ID reached the final dot.
    pub fn count(&self, message_id: &str) -> usize {
        let needle = format!("<{message_id}>");
        self.received().iter().filter(|r| String::from_utf8_lossy(&r.data).contains(&needle)).count()
    }
    /// How many of them got 250.
    pub fn accepted(&self, message_id: &str) -> usize {
        let needle = format!("<{message_id}>");
        self.received().iter().filter(|r| r.answer == DataAnswer::Accept && String::from_utf8_lossy(&r.data).contains(&needle)).count()
    }
}

/// Starts the server with `plan` for the first final dots (then every one is accepted).
pub async fn scripted_smtp(plan: Vec<DataAnswer>) -> ScriptedSmtp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let plan = Arc::new(Mutex::new(std::collections::VecDeque::from(plan)));
    let rec = received.clone();
    let accept = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (rec, plan) = (rec.clone(), plan.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(120), session(tcp, rec, plan)).await;
            });
        }
    });
    ScriptedSmtp { port, received, accept }
}

async fn session(
    tcp: tokio::net::TcpStream,
    rec: Arc<Mutex<Vec<Received>>>,
    plan: Arc<Mutex<std::collections::VecDeque<DataAnswer>>>,
) -> std::io::Result<()> {
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 scripted.test ESMTP\r\n").await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => w.write_all(b"250-scripted.test\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n").await?,
            "AUTH" if text.split(' ').count() >= 3 => w.write_all(b"235 2.7.0 Authentication successful\r\n").await?,
            "AUTH" => {
                w.write_all(b"334 \r\n").await?;
                line.clear();
                r.read_until(b'\n', &mut line).await?;
                w.write_all(b"235 2.7.0 Authentication successful\r\n").await?;
            }
            "MAIL" | "RCPT" | "RSET" | "NOOP" => w.write_all(b"250 2.0.0 Ok\r\n").await?,
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                }
                let answer = plan.lock().expect("plan").pop_front().unwrap_or(DataAnswer::Accept);
                rec.lock().expect("lock").push(Received { data, answer: answer.clone() });
                match answer {
                    DataAnswer::Accept => w.write_all(b"250 2.0.0 Ok: queued\r\n").await?,
                    DataAnswer::Reply(l) => w.write_all(format!("{l}\r\n").as_bytes()).await?,
                    DataAnswer::Cut => return Ok(()),
                    DataAnswer::Stall => {
                        // Hold the connection until the client goes away.
                        let mut rest = Vec::new();
                        while r.read_until(b'\n', &mut rest).await? > 0 {}
                        return Ok(());
                    }
                }
            }
            _ => w.write_all(b"502 5.5.2 Command not recognized\r\n").await?,
        }
    }
}
