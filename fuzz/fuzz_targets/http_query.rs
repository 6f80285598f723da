//! The HTTP list query parser (`parse_query`), filter compilation and the opaque cursor: any
//! query string is parsed or refused with a 400, never a panic; counts stay within bounds; a
//! cursor that decodes re-encodes to one that decodes to the same position.
#![no_main]

use libfuzzer_sys::fuzz_target;
use workflow_dlq::{
    http::dlq::{parse_query, MAX_COUNT},
    store::{Cursor, EntryFilter},
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(q) = parse_query(Some(&text)) {
        assert!((1..=MAX_COUNT).contains(&q.count));
        let _ = EntryFilter::compile(&q.filter);
        if let Some(c) = &q.cursor {
            assert_eq!(Cursor::decode(&c.encode()).as_ref(), Ok(c));
        }
    }
    if let Ok(c) = Cursor::decode(&text) {
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
    }
});
