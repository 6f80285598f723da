//! The DLQ store: the compacted store topic is the truth; every instance keeps a queryable
//! in-memory view of it ([`view`]; the entries' bytes packed in [`payloads`] blocks), fed by
//! a reader that tails the whole topic ([`reader`]).
//! The [`guard`] checks that the topic can still be trusted; the [`sweeper`] expires entries;
//! [`trim`] returns a replay's freed buffers to the system.

pub mod filter;
pub mod guard;
pub mod keys;
mod payloads;
mod postings;
pub mod reader;
pub mod sweeper;
mod text;
pub mod trim;
pub mod view;

pub use filter::{Cursor, EntryFilter, FilterError};
pub use view::{EntryState, Page, StoreView};
