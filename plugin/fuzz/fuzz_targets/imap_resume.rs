#![no_main]
use mailplug_plugin::fuzzing::imap_resume;
libfuzzer_sys::fuzz_target!(|data: &[u8]| imap_resume(data));
