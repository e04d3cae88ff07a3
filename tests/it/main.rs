//! Integration tests, one binary: the CLI and the library against the real typst, broker and
//! database. `helpers` holds what they share.

mod helpers;
mod hostile;
mod postgres;
mod render;
mod s3;
mod summary;
mod tls;
mod worker;
