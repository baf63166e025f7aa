#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailplug_plugin::fuzzing::smtp_batch(data);
});
