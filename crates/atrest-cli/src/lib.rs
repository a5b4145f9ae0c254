//! The deployment directory the `atrest` operator program runs on, shared
//! with the other programs (the upload service `atrest-serve`,
//! `mailbox-move`, `meeting-share`).
//!
//! The `atrest` library holds the mechanisms (seal, open, key hierarchies,
//! blobs, audit); the layout of a deployment directory, its configuration
//! file, the catalog of tenant and file names and the `user@tenant` release
//! policy are application choices, and live here, with the programs.
//!
//! See [`deployment`] for the directory and [`deployment::Deployment`] for
//! what can be done with it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod deployment;
pub mod print;
