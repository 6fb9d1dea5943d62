//! Replica identities, dots and causal contexts: the vocabulary of the
//! presence CRDT, with the clock comparisons `Phoenix.Tracker.Clock` makes.

use std::collections::BTreeMap;
use std::fmt::Debug;

/// What a replica's name may be: any ordered, cloneable value. The
/// in-process tracker uses `Arc<str>`; a Phoenix replica needs to tell an
/// atom from a binary of the same text, so it uses a type that does.
pub trait Name: Clone + Ord + Debug + Send + Sync + 'static {}
impl<T: Clone + Ord + Debug + Send + Sync + 'static> Name for T {}

/// One incarnation of a replica: its name and a version that changes on
/// every restart (Phoenix's `{name, vsn}` replica ref). Two incarnations of
/// one name are different replicas to the CRDT; the runtime treats a new
/// version of a known name as the old one's permanent end
/// ([`Shard`](super::shard::Shard)).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Replica<N> {
    /// The node's name, the same for every incarnation.
    pub name: N,
    /// This incarnation's version.
    pub vsn: u64,
}

impl<N> Replica<N> {
    /// The incarnation `vsn` of `name`.
    pub fn new(name: N, vsn: u64) -> Self {
        Self { name, vsn }
    }
}

/// A dot: the `clock`-th event of `replica` (clocks start at 1). Every
/// add and every remove consumes one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag<N> {
    /// The replica whose event it is.
    pub replica: Replica<N>,
    /// The event's number, from 1, without gaps per replica.
    pub clock: u64,
}

impl<N> Tag<N> {
    /// The dot `clock` of `replica`.
    pub fn new(replica: Replica<N>, clock: u64) -> Self {
        Self { replica, clock }
    }
}

/// A causal context: per replica, the clock up to which every dot has
/// been seen (`%{replica_ref => clock}`).
pub type Context<N> = BTreeMap<Replica<N>, u64>;

/// `Clock.dominates?/2`: `c1` has at least `c2`'s clock for every replica
/// of `c2` (missing counts as 0) and at least as many replicas. False when
/// `c1` lists fewer replicas than `c2`, whatever the clocks.
pub fn dominates<N: Name>(c1: &Context<N>, c2: &Context<N>) -> bool {
    if c1.len() < c2.len() {
        return false;
    }
    c2.iter()
        .all(|(replica, clock)| c1.get(replica).copied().unwrap_or(0) >= *clock)
}

/// `Clock.dominates_or_equal?/2`: for every replica of `c1`, `c1`'s
/// clock is at least `c2`'s (missing counts as 0). Two empty contexts
/// satisfy it; an empty `c1` against a non-empty `c2` does not. Replicas
/// only in `c2` are not looked at.
pub fn dominates_or_equal<N: Name>(c1: &Context<N>, c2: &Context<N>) -> bool {
    if c1.is_empty() {
        return c2.is_empty();
    }
    c1.iter()
        .all(|(replica, clock)| *clock >= c2.get(replica).copied().unwrap_or(0))
}

/// The per-replica maximum of two contexts (replicas of either).
pub fn upperbound<N: Name>(c1: &Context<N>, c2: &Context<N>) -> Context<N> {
    let mut out = c1.clone();
    for (replica, clock) in c2 {
        let entry = out.entry(replica.clone()).or_insert(*clock);
        *entry = (*entry).max(*clock);
    }
    out
}

/// The per-replica minimum of two contexts (replicas of either; a replica
/// in one only keeps its clock).
pub fn lowerbound<N: Name>(c1: &Context<N>, c2: &Context<N>) -> Context<N> {
    let mut out = c1.clone();
    for (replica, clock) in c2 {
        let entry = out.entry(replica.clone()).or_insert(*clock);
        *entry = (*entry).min(*clock);
    }
    out
}

/// `context` limited to the replicas of `keys`.
pub fn restrict<N: Name, V: Clone>(
    map: &BTreeMap<Replica<N>, V>,
    keys: &Context<N>,
) -> BTreeMap<Replica<N>, V> {
    map.iter()
        .filter(|(replica, _)| keys.contains_key(*replica))
        .map(|(replica, value)| (replica.clone(), value.clone()))
        .collect()
}

/// A replica's advertised clock: `(who, its context)`, as heartbeats and
/// transfer requests carry it.
pub type Clocks<N> = (Replica<N>, Context<N>);

/// `Clock.append_clock/2`: adds `clock` to `set`, keeping only clocks that
/// no other clock of the set dominates. An empty context is not added.
pub fn append_clock<N: Name>(set: &mut Vec<Clocks<N>>, clock: Clocks<N>) {
    if clock.1.is_empty() {
        return;
    }
    let big = set.iter().fold(Context::new(), |acc, (_, context)| {
        upperbound(&acc, context)
    });
    if dominates(&clock.1, &big) {
        set.clear();
        set.push(clock);
        return;
    }
    if dominates(&big, &clock.1) {
        return;
    }
    let mut insert = false;
    set.retain(|(_, other)| {
        if dominates(&clock.1, other) {
            insert = true;
            false
        } else {
            insert |= !dominates(other, &clock.1);
            true
        }
    });
    if insert {
        set.insert(0, clock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&'static str, u64)]) -> Context<&'static str> {
        pairs
            .iter()
            .map(|(name, clock)| (Replica::new(*name, 1), *clock))
            .collect()
    }

    #[test]
    fn dominates_needs_as_many_replicas() {
        assert!(dominates(&ctx(&[("a", 2), ("b", 1)]), &ctx(&[("a", 2)])));
        assert!(!dominates(&ctx(&[("a", 9)]), &ctx(&[("a", 1), ("b", 0)])));
        assert!(!dominates(&ctx(&[("a", 1), ("b", 5)]), &ctx(&[("a", 2)])));
    }

    #[test]
    fn dominates_or_equal_looks_at_the_first_only() {
        assert!(dominates_or_equal(&ctx(&[]), &ctx(&[])));
        assert!(!dominates_or_equal(&ctx(&[]), &ctx(&[("a", 0)])));
        assert!(dominates_or_equal(
            &ctx(&[("a", 3)]),
            &ctx(&[("a", 3), ("b", 9)])
        ));
        assert!(!dominates_or_equal(&ctx(&[("a", 2)]), &ctx(&[("a", 3)])));
    }

    #[test]
    fn bounds_are_per_replica() {
        let (a, b) = (ctx(&[("a", 1), ("b", 5)]), ctx(&[("a", 3), ("c", 2)]));
        assert_eq!(upperbound(&a, &b), ctx(&[("a", 3), ("b", 5), ("c", 2)]));
        assert_eq!(lowerbound(&a, &b), ctx(&[("a", 1), ("b", 5), ("c", 2)]));
    }

    #[test]
    fn append_clock_keeps_the_undominated() {
        let me = |name| Replica::new(name, 1);
        let mut set = Vec::new();
        append_clock(&mut set, (me("a"), ctx(&[])));
        assert!(set.is_empty());
        append_clock(&mut set, (me("a"), ctx(&[("a", 1), ("b", 0)])));
        append_clock(&mut set, (me("b"), ctx(&[("a", 0), ("b", 2)])));
        assert_eq!(set.len(), 2, "neither dominates the other: {set:?}");
        append_clock(&mut set, (me("c"), ctx(&[("a", 1), ("b", 2)])));
        assert_eq!(set, vec![(me("c"), ctx(&[("a", 1), ("b", 2)]))]);
        append_clock(&mut set, (me("a"), ctx(&[("a", 1), ("b", 0)])));
        assert_eq!(set.len(), 1, "a dominated clock is not added");
    }
}
