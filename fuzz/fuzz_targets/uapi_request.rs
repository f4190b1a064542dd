//! Fuzz target: `wgmesh_proto::uapi::parse_request` on arbitrary bytes, as a
//! UAPI client could send them. Beyond "never panics" it checks what the
//! socket server relies on: a parsed request consumed no more than it was
//! given and parses the same from exactly those bytes; a prefix either waits
//! for more or gives the same answer; and a set request the parser accepted
//! renders its errors as `errno=-N`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgmesh_proto::uapi::{parse_request, render_error};

fuzz_target!(|data: &[u8]| {
    let whole = parse_request(data);
    match &whole {
        Ok(Some((_, used))) => {
            assert!(*used <= data.len());
            assert_eq!(parse_request(&data[..*used]), whole);
        }
        Ok(None) => {}
        Err(e) => assert!(render_error(e).starts_with("errno=-")),
    }
    // Half of the input, as if the rest had not arrived yet.
    let part = parse_request(&data[..data.len() / 2]);
    assert!(part == Ok(None) || part == whole);
});
