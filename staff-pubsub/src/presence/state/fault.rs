use std::cell::Cell;

/// One breakage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The merge as specified.
    None,
    /// Phoenix's own step: a removed value's dot leaves the clouds.
    ForgetRemovedDot,
    /// Joins skip only values held, not every dot seen: a delayed or
    /// duplicated delta brings a removed value back.
    JoinSeenDots,
    /// Both of Phoenix's steps below: its merge as it is.
    Phoenix,
    /// Phoenix's own step: a join replaces the value of its identity
    /// even when that value has a newer dot of the same replica.
    OverwriteNewer,
    /// Removes use the remote's clouds only, not its context: a full
    /// state no longer carries removals.
    IgnoreRemoteContext,
}

thread_local! {
    static FAULT: Cell<Fault> = const { Cell::new(Fault::None) };
}

/// Whether `fault` is on in this thread.
pub(crate) fn has(fault: Fault) -> bool {
    let current = FAULT.with(Cell::get);
    current == fault
        || (current == Fault::Phoenix
            && matches!(fault, Fault::ForgetRemovedDot | Fault::OverwriteNewer))
}

/// Sets the fault of this thread until the guard is dropped.
pub(crate) fn set(fault: Fault) -> impl Drop {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FAULT.with(|cell| cell.set(Fault::None));
        }
    }
    FAULT.with(|cell| cell.set(fault));
    Reset
}
