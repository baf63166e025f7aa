#![no_main]
use mailplug_plugin::fuzzing::{session, Protocol};
libfuzzer_sys::fuzz_target!(|data: &[u8]| session(Protocol::Pop3, data));
