//! Parsing delivered messages: one `parse.parse-message` call per message, in a component
//! instance of its own with its own memory cap and CPU budget per call. A message that makes
//! the parser trap poisons only that instance: the session's instance never runs the parser,
//! so the session carries on, and the message is stored raw, flagged with what happened. The
//! parse instance is made on the first delivery of a run and made again only after a trap.

use wasmtime::Store;

use super::{
    pool_full, start, trap_of, Address, Allocation, Attachment, Classification, Connector, ConnectorPre, GuestState, HostError,
    Instance, RawMessage, StartFailure, Trap, WireParsed,
};

/// How much one parse call may use. Separate from the session's limits: a message that
/// exceeds these is stored unparsed, it never ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseBudget {
    /// The parse instance's memory cap, in bytes.
    pub memory_bytes: usize,
    /// CPU time per message, in milliseconds.
    pub cpu_ms: u32,
}

impl Default for ParseBudget {
    /// The tenant configuration's defaults (`limits.parse_memory_mb`, `limits.parse_cpu_ms`).
    fn default() -> Self {
        let l = crate::config::Limits::default();
        ParseBudget { memory_bytes: (l.parse_memory_mb as usize) << 20, cpu_ms: l.parse_cpu_ms }
    }
}

/// The parsed form of a fetched message (the contract's `parse.parsed-message`), with the
/// bodies as strings: the component hands them over as UTF-8 bytes (`utf8-text`), and the host
/// checks them once, when the parse returns (`from_wire`).
#[derive(Debug, Clone)]
pub struct ParsedMessage {
    pub message_id: String,
    pub message_id_synthetic: bool,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub from: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub subject: Option<String>,
    pub date_ms: Option<i64>,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub attachments: Vec<Attachment>,
    pub classification: Classification,
    pub warnings: Vec<String>,
}

/// A body from the component as a string, checked with simdutf8: the scalar check of `core`,
/// which the runtime would apply to a `string`, was the largest single cost of an ingest.
fn utf8_body(bytes: Option<Vec<u8>>, which: &str) -> Result<Option<String>, String> {
    let Some(bytes) = bytes else { return Ok(None) };
    match simdutf8::basic::from_utf8(&bytes) {
        // SAFETY: the line above checked that `bytes` is valid UTF-8.
        Ok(_) => Ok(Some(unsafe { String::from_utf8_unchecked(bytes) })),
        Err(_) => Err(format!(
            "the message parser returned {which} body that is not UTF-8 (a fault in the component); the message is stored unparsed, as received"
        )),
    }
}

impl ParsedMessage {
    /// The host's form of the component's parse; an error (for the flagged raw message) when a
    /// body is not UTF-8, which the component never returns.
    fn from_wire(w: WireParsed) -> Result<ParsedMessage, String> {
        Ok(ParsedMessage {
            text_body: utf8_body(w.text_body, "a text")?,
            html_body: utf8_body(w.html_body, "an HTML")?,
            message_id: w.message_id,
            message_id_synthetic: w.message_id_synthetic,
            in_reply_to: w.in_reply_to,
            references: w.references,
            from: w.from,
            reply_to: w.reply_to,
            to: w.to,
            cc: w.cc,
            subject: w.subject,
            date_ms: w.date_ms,
            attachments: w.attachments,
            classification: w.classification,
            warnings: w.warnings,
        })
    }
}

/// A delivered message as the host stores it: the session's raw bytes, and the parse result
/// or why there is none (the parser's reason, or the budget the message exceeded).
#[derive(Debug, Clone)]
pub struct FetchedMessage {
    /// The server's stable id: "imap:<folder>:<uidvalidity>:<uid>" or "pop3:<uidl>".
    pub id: String,
    /// The folder it came from ("INBOX" for POP3), UTF-8.
    pub folder: String,
    /// The message exactly as the server sent it.
    pub raw: Vec<u8>,
    /// The parsed message, or a sentence for the admin saying why it could not be parsed; such
    /// a message is stored raw and flagged, and acknowledged like any other.
    pub parsed: Result<ParsedMessage, String>,
}

struct Live {
    store: Store<GuestState>,
    bindings: Connector,
    ticks: u64,
}

/// The parse instance of one `Instance`, made when first needed.
pub(super) struct Parser {
    pre: ConnectorPre<GuestState>,
    allocation: Allocation,
    budget: ParseBudget,
    live: Option<Live>,
    /// Parse instances made so far (the first, then one after each trap).
    instantiations: u32,
}

impl Parser {
    pub(super) fn new(pre: ConnectorPre<GuestState>, allocation: Allocation, budget: ParseBudget) -> Parser {
        Parser { pre, allocation, budget, live: None, instantiations: 0 }
    }

    async fn live(&mut self) -> Result<&mut Live, HostError> {
        if self.live.is_none() {
            let mb = self.budget.memory_bytes >> 20;
            let (store, bindings, ticks) =
                start(&self.pre, &self.allocation, self.budget.memory_bytes, self.budget.cpu_ms).await.map_err(|f| match f {
                    StartFailure::LargerThanSlot(slot) => HostError::Plugin(format!(
                        "limits.parse_memory_mb = {mb} MB is larger than this host's instances can have ({} MB): the host sizes them \
                         from the configured limits when it starts; restart it with this configuration, or lower limits.parse_memory_mb",
                        slot >> 20
                    )),
                    StartFailure::PoolFull(n) => pool_full(n),
                    StartFailure::Memory(e) | StartFailure::Other(e) => HostError::Plugin(format!(
                        "the message parser does not start within limits.parse_memory_mb = {mb} MB; raise it ({})",
                        super::first_line(&format!("{e:#}"))
                    )),
                })?;
            self.instantiations += 1;
            self.live = Some(Live { store, bindings, ticks });
        }
        self.live.as_mut().ok_or_else(|| HostError::Plugin("the message parser is not running".into()))
    }

    /// Parses `raw`. The outer error is the host's (the parser cannot start at all); the inner
    /// one says why this message has no parse: the parser's reason, or the budget it exceeded.
    async fn parse(&mut self, raw: &[u8]) -> Result<Result<ParsedMessage, String>, HostError> {
        let budget = self.budget;
        let live = self.live().await?;
        live.store.set_epoch_deadline(live.ticks);
        let r = live.bindings.mailplug_connector_parse().call_parse_message(&mut live.store, raw).await;
        match r {
            Ok(parsed) => Ok(parsed.and_then(ParsedMessage::from_wire)),
            Err(e) => {
                let refused = live.store.data().limits.refused;
                // A trap poisons the instance: the next message gets a fresh one.
                self.live = None;
                Ok(Err(match trap_of(&e, refused, budget.memory_bytes) {
                    Trap::Memory { .. } => format!(
                        "the message exceeded the parse memory budget of {} MB (limits.parse_memory_mb); it is stored unparsed, as received",
                        budget.memory_bytes >> 20
                    ),
                    Trap::Cpu => format!(
                        "parsing the message took longer than the parse CPU budget of {} ms (limits.parse_cpu_ms); it is stored unparsed, as received",
                        budget.cpu_ms
                    ),
                    Trap::Crash(why) => {
                        format!("the message parser stopped unexpectedly ({why}); the message is stored unparsed, as received")
                    }
                }))
            }
        }
    }
}

impl Instance {
    /// The budget for parsing the messages this instance's sessions deliver. A parse instance
    /// already made with another budget is replaced on the next parse.
    pub fn set_parse_budget(&mut self, budget: ParseBudget) {
        if budget != self.parser.budget {
            self.parser.budget = budget;
            self.parser.live = None;
        }
    }

    /// How many parse instances were made so far: 1 after the first delivery, one more after
    /// each message that made the parser trap.
    pub fn parse_instantiations(&self) -> u32 {
        self.parser.instantiations
    }

    /// Parses one message in the parse instance; never fails because of the message.
    pub async fn parse_message(&mut self, raw: &[u8]) -> Result<Result<ParsedMessage, String>, HostError> {
        self.parser.parse(raw).await
    }

    /// A delivered message with its parse, ready for a `MessageSink`.
    pub async fn parse_delivery(&mut self, m: RawMessage) -> Result<FetchedMessage, HostError> {
        let parsed = self.parser.parse(&m.raw).await?;
        Ok(FetchedMessage { id: m.id, folder: m.folder, raw: m.raw, parsed })
    }
}

#[cfg(test)]
mod tests {
    use super::{utf8_body, Classification, ParsedMessage, WireParsed};

    fn wire(text: Option<&[u8]>, html: Option<&[u8]>) -> WireParsed {
        WireParsed {
            message_id: "m@x".into(),
            message_id_synthetic: false,
            in_reply_to: vec![],
            references: vec![],
            from: vec![],
            reply_to: vec![],
            to: vec![],
            cc: vec![],
            subject: Some("s".into()),
            date_ms: None,
            text_body: text.map(<[u8]>::to_vec),
            html_body: html.map(<[u8]>::to_vec),
            attachments: vec![],
            classification: Classification::Normal,
            warnings: vec![],
        }
    }

    /// The host's form of the component's parse: bodies as strings, and a bad body of either
    /// kind named in the sentence the message is flagged with.
    #[test]
    fn a_parse_with_a_body_that_is_not_utf8_is_a_flagged_failure_naming_the_body() {
        let ok = ParsedMessage::from_wire(wire(Some("Grüße".as_bytes()), Some(b"<p>hi</p>"))).expect("UTF-8 bodies");
        assert_eq!((ok.text_body.as_deref(), ok.html_body.as_deref(), ok.subject.as_deref()), (Some("Grüße"), Some("<p>hi</p>"), Some("s")));
        let text = ParsedMessage::from_wire(wire(Some(b"\xff"), Some(b"<p>hi</p>"))).expect_err("bad text body");
        assert!(text.starts_with("the message parser returned a text body that is not UTF-8 (a fault in the component)"), "{text}");
        let html = ParsedMessage::from_wire(wire(Some(b"ok"), Some(b"\xc3"))).expect_err("bad HTML body");
        assert!(html.starts_with("the message parser returned an HTML body that is not UTF-8 (a fault in the component)"), "{html}");
    }

    /// The bodies the component hands over as bytes become strings when they are UTF-8, and a
    /// typed parse failure (the message is then stored raw, flagged) when they are not.
    #[test]
    fn bodies_from_the_component_are_checked_once_as_utf8() {
        assert_eq!(utf8_body(None, "text"), Ok(None));
        let german = "Grüße aus Köln, 10 € — ok\r\n".repeat(40);
        assert_eq!(utf8_body(Some(german.clone().into_bytes()), "text"), Ok(Some(german)));
        for bad in [&b"abc\xff"[..], b"\xc3", b"\xed\xa0\x80 surrogate", b"\xc0\xaf overlong"] {
            let err = utf8_body(Some(bad.to_vec()), "an HTML").expect_err("not UTF-8");
            assert!(err.starts_with("the message parser returned an HTML body that is not UTF-8") && err.contains("stored unparsed"), "{err}");
        }
    }
}
