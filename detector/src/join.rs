//! Joins made in input order, before records are routed to shards: a delivery report
//! without `src` gets the addresses of the message it reports on (by `ref`), and a reply to
//! a port without a registered signature gets the signature the port last sent.
//!
//! Both are lookups into what earlier records said, so they depend on input order: replay
//! reads files in order; the daemon joins within what it has consumed, so a report that
//! arrives before its message (or after [`Pack::dlr_join_ms`]) stays without a port.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};

use anning_rules::{AddrClass, Pack, RecordKind};

use crate::record::{Enricher, Record, Slot};

/// Maps keyed by text (ports): hashbrown's default hasher (foldhash), not std's SipHash, which
/// cost more than the lookups' cache misses on the joining thread. Serialised as any map.
type TextMap<V> = hashbrown::HashMap<Box<str>, V>;

/// A message id's xxh3 as its own hash: hashing it again only costs.
#[derive(Default, Clone, Copy)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys use this hasher (`write_u64`); anything else is still spread.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A destination kept compactly: digits of up to 19 characters with no leading zero as a
/// number, anything else as text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Dst {
    Num(u64),
    Text(Box<str>),
}

impl Dst {
    fn new(s: &str) -> Dst {
        // A leading zero would not come back from the number.
        match crate::engine::as_number(s) {
            Some(n) if !s.starts_with('0') => Dst::Num(n),
            _ => Dst::Text(s.into()),
        }
    }

    fn text(&self) -> String {
        match self {
            Dst::Num(n) => n.to_string(),
            Dst::Text(t) => t.to_string(),
        }
    }
}

/// Most ports whose last signature is remembered.
const MAX_PORT_SIGS: usize = 1 << 20;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Joiner {
    /// From the pack, not the snapshot ([`Joiner::restore`]).
    #[serde(skip)]
    keep_ms: i64,
    /// xxh3(message id) → (port, destination) of recent port messages: the port as an index
    /// into `ports`, the destination as its digits' value (so a message costs no allocation).
    messages: hashbrown::HashMap<u64, (u32, Dst), BuildHasherDefault<Prehashed>>,
    ports: Vec<Box<str>>,
    port_ids: TextMap<u32>,
    order: VecDeque<(i64, u64)>,
    /// Port → the signature it last sent.
    port_sigs: TextMap<Box<str>>,
}

impl Joiner {
    pub fn new(pack: &Pack) -> Self {
        Joiner {
            keep_ms: pack.dlr_join_ms,
            ..Default::default()
        }
    }

    /// Remembers what `r` tells about ports and returns it, joined where it lacked something.
    pub fn apply(&mut self, r: Record, en: Enricher<'_>) -> Record {
        self.apply_joined(r, en).0
    }

    /// [`apply`](Self::apply), and whether the record was joined (so differs from `r`).
    pub fn apply_joined(&mut self, r: Record, en: Enricher<'_>) -> (Record, bool) {
        match r.kind {
            RecordKind::Sms if r.src_class == AddrClass::Port => {
                let (Some(src), Some(dst)) = (r.src(), r.dst()) else {
                    return (r, false);
                };
                if self.keep_ms > 0
                    && let Some(id) = r.id()
                {
                    let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
                    let port = match self.port_ids.get(src) {
                        Some(&p) => p,
                        None => {
                            let p = self.ports.len() as u32;
                            self.ports.push(src.into());
                            self.port_ids.insert(src.into(), p);
                            p
                        }
                    };
                    self.messages.insert(h, (port, Dst::new(dst)));
                    self.order.push_back((r.ts, h));
                    self.expire(r.ts);
                }
                if let Some(sig) = r.get(Slot::Sig)
                    && self.port_sigs.get(src).is_none_or(|s| **s != *sig)
                    && (self.port_sigs.len() < MAX_PORT_SIGS || self.port_sigs.contains_key(src))
                {
                    self.port_sigs.insert(src.into(), sig.into());
                }
                (r, false)
            }
            RecordKind::Sms if r.dst_class == AddrClass::Port && r.get(Slot::Sig).is_none() => {
                match r.dst().and_then(|d| self.port_sigs.get(d)) {
                    Some(sig) => {
                        let sig = sig.clone();
                        (r.rebuild(en, |b| b.set(Slot::Sig, &sig)), true)
                    }
                    None => (r, false),
                }
            }
            RecordKind::Dlr if r.src().is_none() => {
                let Some(id) = r.get(Slot::Ref) else { return (r, false) };
                let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
                match self.messages.get(&h) {
                    Some((port, dst)) => {
                        let (src, dst) = (self.ports[*port as usize].clone(), dst.text());
                        let joined = r.rebuild(en, |b| {
                            b.set(Slot::Src, &src);
                            b.set(Slot::Dst, &dst);
                        });
                        (joined, true)
                    }
                    None => (r, false),
                }
            }
            _ => (r, false),
        }
    }

    /// A joiner read back from a checkpoint, going on with `pack`'s join horizon.
    pub fn with_pack(mut self, pack: &Pack) -> Self {
        self.keep_ms = pack.dlr_join_ms;
        self
    }

    /// Messages and ports remembered (for sizing checkpoints).
    pub fn len(&self) -> usize {
        self.messages.len() + self.port_sigs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&mut self, now: i64) {
        while let Some(&(ts, h)) = self.order.front() {
            if ts > now - self.keep_ms {
                break;
            }
            self.order.pop_front();
            self.messages.remove(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A destination comes back as it went in, kept as a number only when that loses
        /// nothing: digit strings up to past 19 digits, with leading zeros, a sign, or text.
        #[test]
        fn a_destination_comes_back_as_it_went_in(s in "[0-9]{0,21}|[+0][0-9]{0,12}|[ -~]{0,8}") {
            let d = Dst::new(&s);
            proptest::prop_assert_eq!(d.text(), s.clone());
            let number = matches!(d, Dst::Num(_));
            proptest::prop_assert_eq!(number, (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0'));
        }
    }
}
