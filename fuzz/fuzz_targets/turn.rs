#![no_main]
libfuzzer_sys::fuzz_target!(|d: &[u8]| supervox_fuzz::turn(d));
