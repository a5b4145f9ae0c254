//! How many connections each client address holds: one address (an IPv4
//! address, or an IPv6 `/64`, which one client commonly has whole) cannot
//! take more than its share of the service's connections, so that a single
//! client, with or without credentials, cannot hold every slot.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The shortest time between two log lines about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connections open per client address, each bounded.
#[derive(Debug)]
pub(crate) struct PerAddress {
    limit: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    open: HashMap<IpAddr, usize>,
    /// Connections refused since the last log line, and when that was.
    refused: u64,
    warned: Option<Instant>,
}

/// One connection's place in its address's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    /// At most `limit` connections per address.
    pub(crate) fn new(limit: NonZeroUsize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.get(),
            table: Mutex::new(Table::default()),
        })
    }

    /// A place for a connection from `peer`, or `None` if its address
    /// holds as many as it may (the refusal is logged, at most every
    /// [`WARN_EVERY`]).
    pub(crate) fn take(self: &Arc<Self>, peer: IpAddr) -> Option<Held> {
        let address = client(peer);
        let mut table = self.table();
        let open = table.open.entry(address).or_insert(0);
        if *open >= self.limit {
            table.refused += 1;
            if table.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                tracing::warn!(
                    "refused {} connection(s): {address} (or its /64) already holds {} \
                     (--max-connections-per-address)",
                    table.refused,
                    self.limit
                );
                table.refused = 0;
                table.warned = Some(Instant::now());
            }
            return None;
        }
        *open += 1;
        Some(Held {
            table: Arc::clone(self),
            address,
        })
    }

    /// How many connections `peer`'s address holds.
    #[cfg(test)]
    fn open(&self, peer: IpAddr) -> usize {
        self.table().open.get(&client(peer)).copied().unwrap_or(0)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent whatever panicked while it was held.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut table = self.table.table();
        if let Some(open) = table.open.get_mut(&self.address) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                table.open.remove(&self.address);
            }
        }
    }
}

/// The address a connection is counted under: IPv4 (an IPv4-mapped IPv6
/// address too) as it is, IPv6 by its `/64`.
fn client(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_limit_until_it_gives_one_back() {
        let table = PerAddress::new(NonZeroUsize::new(2).unwrap());
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.take(one).unwrap();
        let _second = table.take(one).unwrap();
        assert!(table.take(one).is_none());
        // Another address is not held back.
        let _third = table.take(other).unwrap();
        drop(first);
        let _again = table.take(one).unwrap();
        assert!(table.take(one).is_none());
        assert_eq!(table.open(one), 2);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let table = PerAddress::new(NonZeroUsize::new(1).unwrap());
        let _held = table.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(
            table
                .take("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_none()
        );
        assert!(table.take("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = table.take("198.51.100.7".parse().unwrap()).unwrap();
        assert!(table.take("::ffff:198.51.100.7".parse().unwrap()).is_none());
    }

    #[test]
    fn an_address_that_gives_every_place_back_leaves_no_entry() {
        let table = PerAddress::new(NonZeroUsize::new(3).unwrap());
        let address: IpAddr = "203.0.113.5".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| table.take(address).unwrap()).collect();
        drop(held);
        assert!(table.table().open.is_empty());
    }
}
