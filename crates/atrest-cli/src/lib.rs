//! What the programs of this crate share (`atrest`, `atrest-serve`,
//! `mailbox-move`): one convention for exit codes and error reports
//! ([`outcome`]), printing that notices a closed standard output,
//! blocking files as the async library's sources and sinks, the clients of
//! the service (`atrest meeting fetch`, `mailbox-move --to`: [`client`]),
//! and a mailbox move's two trails, the source's journal and their check
//! ([`moves`]). The deployment directory they run on is the
//! `atrest-deployment` crate.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod moves;
pub mod outcome;
pub mod pipe;
pub mod print;
