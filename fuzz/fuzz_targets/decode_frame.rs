//! Any bytes given to `decode_frame` yield a message or a typed error, never a panic;
//! a message that decodes re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = hero_protocol::decode_frame(data) {
        let frame = hero_protocol::encode_frame(&msg).expect("a decoded message re-encodes");
        let again = hero_protocol::decode_frame(&frame).expect("a re-encoded frame decodes");
        assert_eq!(again, msg);
    }
});
