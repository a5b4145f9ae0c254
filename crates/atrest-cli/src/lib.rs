//! What the programs of this crate share (`atrest`, `atrest-serve`,
//! `mailbox-move`): one convention for exit codes and error reports
//! ([`outcome`]), printing that notices a closed standard output, and
//! blocking files as the async library's sources and sinks. The
//! deployment directory they run on is the `atrest-deployment` crate.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod moves;
pub mod outcome;
pub mod pipe;
pub mod print;
