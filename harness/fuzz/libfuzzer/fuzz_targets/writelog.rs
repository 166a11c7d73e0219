#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| airboot_fuzz::run("writelog", data));
