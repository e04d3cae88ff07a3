//! tradebulletin turns trade statistics into published bulletins.
//!
//! The pure core never awaits:
//! - [`period`]: the period grammar (`2019-H1`, `2019-01..07`), year-ago periods, tiling.
//! - [`region`]: the 31 provinces and the nation, by any name or GB/T 2260 code.
//! - [`facts`]: the fact fields, their validation, and [`facts::FactSet`], which finds the
//!   value of a series in a period, summing the periods that tile it.
//! - [`summary`]: the regional trade summary a bulletin states.
//! - [`narrative`]: how figures and periods are written in English and Chinese.
//! - [`template`]: the minijinja templates that write Typst source, with escaping that keeps
//!   data from ever becoming Typst code.
//!
//! - [`job`]: the request of the contract, checked at the boundary, and the error codes.
//!
//! I/O lives at the edges:
//! - [`store`]: where facts come from (the embedded sample dataset, a CSV file, PostgreSQL).
//! - [`pgstore`]: PostgreSQL: migrations, COPY import, the per-summary query.
//! - [`typst`]: the typst child process.
//! - [`render`]: summary to PDF (template, then typst).
//! - [`storage`]: where PDFs are kept, by job id.
//! - [`broker`]: RabbitMQ connection, topology and confirmed publishing.
//! - [`worker`]: one job from delivery to result, and the consuming loop around it.
//! - [`client`]: the producer and subscriber sides (`enqueue`, `subscribe`).
//! - [`http`]: health, readiness and Prometheus metrics.
//! - [`tls`]: PEM files (CAs, client certificates, keys) and the rustls client configurations
//!   of the broker, PostgreSQL and S3 connections.
//! - [`settings`] and [`telemetry`]: configuration and logging, set up once.

pub mod broker;
pub mod client;
pub mod facts;
pub mod http;
pub mod job;
pub mod narrative;
pub mod period;
pub mod pgstore;
pub mod region;
pub mod render;
pub mod settings;
pub mod storage;
pub mod store;
pub mod summary;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod typst;
pub mod worker;
