//! The command validator: any decodable command is accepted or refused with a reason code, and
//! an accepted one never selects "everything" by accident (an empty id list or a filter with no
//! field is refused) and copies no unbounded field into what the service writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use workflow_dlq::{
    commands::validate::{validate, Selection, MAX_ID_LEN},
    wire::{decode, pb, pb::recovery_command::Selector},
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let ct: Option<&[u8]> = if selector & 1 == 0 {
        None
    } else {
        Some(b"application/json")
    };
    let Ok(cmd) = decode::<pb::RecoveryCommand>(ct, Some(payload)) else {
        return;
    };
    match validate(&cmd) {
        Err(e) => {
            assert!(!e.code().is_empty());
            let _ = e.to_string();
        }
        Ok(v) => {
            assert!(!cmd.command_id.trim().is_empty());
            assert!(cmd.command_id.len() <= MAX_ID_LEN);
            assert!(cmd.max_per_second.is_finite() && cmd.max_per_second >= 0.0);
            match (&v.selection, &cmd.selector) {
                (Selection::Ids(ids), Some(Selector::DlqIds(_))) => {
                    assert!(!ids.is_empty());
                    assert!(ids.iter().all(|i| !i.is_empty() && i.len() <= MAX_ID_LEN));
                }
                (Selection::Filter(f), Some(Selector::Filter(_))) => assert!(!f.is_empty()),
                (Selection::All, Some(Selector::All(true))) => {}
                (s, raw) => panic!("selection {s:?} from selector {raw:?}"),
            }
        }
    }
});
