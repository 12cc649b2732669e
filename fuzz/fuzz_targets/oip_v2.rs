#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshward_fuzz::check_oip_v2(data));
