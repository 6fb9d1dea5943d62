//! Models of an inbox (`inbox.rs`): model 3, the wait and the wake-up
//! (`Inbox::poll_with`, `Cursor::wait`); model 4, the resume boundary
//! (`subscribe_since` racing the log reader, with `Inbox::resuming`); and
//! model 5, the gap marker's place among messages pushed concurrently.

use super::*;
use crate::loom::model;
use crate::loom::sync::atomic::{fence, AtomicU64, Ordering};
use crate::registry::{Registry, Tally};
use crate::topic::Topic;

/// Receives as a subscription's `recv` does: polls, and sleeps until woken
/// (loom reports a deadlock if no wake-up comes).
fn recv(inbox: &Inbox<u64>) -> Taken<u64> {
    loom::future::block_on(std::future::poll_fn(|cx| inbox.poll_take(cx)))
}

/// Model 3: a subscriber that finds nothing and waits is woken by the next
/// message, whenever it comes: for a ring reader, a push between the read
/// that found nothing and the registration of its waker is seen by the
/// read again after registering (`Cursor::wait`); for a queue of its own,
/// the push and the registration take the inbox's lock.
#[test]
fn loom_wake_no_lost_wake_up() {
    for reads_ring in [true, false] {
        model(move || {
            let ring = Arc::new(Ring::<u64>::new(4));
            let inbox = Arc::new(Inbox::new());
            if reads_ring {
                assert!(inbox.join_ring(&ring));
            }
            let publisher = {
                let (ring, inbox) = (Arc::clone(&ring), Arc::clone(&inbox));
                loom::thread::spawn(move || {
                    for n in 1..=2 {
                        if reads_ring {
                            ring.push(Arc::new(n), None, 1, &mut Vec::new());
                        } else {
                            inbox.push_returning_evicted(Arc::new(n), None, 4);
                        }
                    }
                })
            };
            assert_eq!(recv(&inbox), Ok((Arc::new(1), None)));
            assert_eq!(recv(&inbox), Ok((Arc::new(2), None)));
            publisher.join().unwrap();
        });
    }
}

/// Model 4: `subscribe_since` racing the log reader. The reader
/// (`dispatch_wire` in `server/core.rs`) sets the head, then a SeqCst
/// fence, then dispatches (the registry's relaxed presence probe first);
/// the resume (`subscribe_since` in `server/resume.rs`) registers its
/// resuming inbox, then a SeqCst fence, then reads the head, sets the
/// replay's end at once (`Inbox::resume_through`), replays the log up to
/// the head and skips the queued copies up to it (as `Subscription` does).
/// Both sequences are those of the server, step for step; the registry and
/// the inbox are the real ones. Each entry then comes exactly once, or is
/// counted in a `Lagged` report (a queue of one, full), and a dropped copy
/// the replay delivers is not counted.
#[test]
fn loom_resume_each_entry_once_across_the_boundary() {
    const LOG: u16 = 7;
    /// Entry 1 was dispatched before the resume; 2, 3 and 4 race it.
    const ENTRIES: u64 = 4;
    for capacity in [1, 2] {
        model(move || {
            let registry = Arc::new(Registry::<u64>::new(1, capacity));
            let topic = Topic::new("loom:resume");
            // `Core::head`, as `set_head` stores it (the log id aside).
            let head = Arc::new(AtomicU64::new(1));

            let reader = {
                let (registry, head) = (Arc::clone(&registry), Arc::clone(&head));
                loom::thread::spawn(move || {
                    let mut tallies = Vec::new();
                    for seq in 2..=ENTRIES {
                        head.store(seq, Ordering::Release);
                        fence(Ordering::SeqCst);
                        let mut tally = Tally::default();
                        registry.deliver(
                            topic.as_key(),
                            || Arc::new(seq),
                            Position::new(LOG, seq),
                            None,
                            &mut tally,
                        );
                        tallies.push(tally);
                    }
                    tallies
                })
            };

            // Resuming after entry 1.
            let inbox = Arc::new(Inbox::resuming());
            registry.insert(topic, Arc::clone(&inbox), false);
            fence(Ordering::SeqCst);
            let through = head.load(Ordering::Acquire);
            inbox.resume_through(Position::new(LOG, through));
            let mut received: Vec<u64> = (2..=through).collect();
            let tallies = reader.join().unwrap();

            let mut lagged = 0;
            while let Some(taken) = inbox.try_take() {
                match taken {
                    Ok((message, position)) => {
                        let position = position.unwrap();
                        assert_eq!(position.seq(), *message);
                        // The replay has it: a queued copy is skipped.
                        if position.seq() > through {
                            received.push(*message);
                        }
                    }
                    Err(RecvError::Lagged(n)) => lagged += n,
                    Err(other) => panic!("{other:?}"),
                }
            }
            let mut sorted = received.clone();
            sorted.dedup();
            assert_eq!(sorted, received, "an entry twice or out of order");
            assert_eq!(
                received.len() as u64 + lagged,
                ENTRIES - 1,
                "entries {received:?} and {lagged} lagged (through {through}, capacity {capacity}, {tallies:?})"
            );
        });
    }
}

/// Model 5: a gap signalled after a message was queued (in the
/// happens-before sense) is read after it, while a publisher pushes and the
/// subscriber reads at the same time: for a queue of its own and for a
/// ring reader.
#[test]
fn loom_gap_never_read_before_a_message_queued_before_it() {
    for reads_ring in [false, true] {
        model(move || {
            let ring = Arc::new(Ring::<u64>::new(4));
            let inbox = Arc::new(Inbox::new());
            if reads_ring {
                assert!(inbox.join_ring(&ring));
            }
            // The number of messages queued so far.
            let queued = Arc::new(AtomicU64::new(0));
            let publisher = {
                let (ring, inbox, queued) =
                    (Arc::clone(&ring), Arc::clone(&inbox), Arc::clone(&queued));
                loom::thread::spawn(move || {
                    for n in 1..=2 {
                        if reads_ring {
                            ring.push(Arc::new(n), None, 1, &mut Vec::new());
                        } else {
                            inbox.push_returning_evicted(Arc::new(n), None, 4);
                        }
                        queued.store(n, Ordering::Release);
                    }
                })
            };
            let signaller = {
                let (inbox, queued) = (Arc::clone(&inbox), Arc::clone(&queued));
                loom::thread::spawn(move || {
                    let before = queued.load(Ordering::Acquire);
                    inbox.signal_gap(&Arc::new(Gap::Disconnected));
                    before
                })
            };
            let mut taken = Vec::new();
            taken.extend(inbox.try_take());
            let before = signaller.join().unwrap();
            publisher.join().unwrap();
            taken.extend(std::iter::from_fn(|| inbox.try_take()));

            let gap = taken
                .iter()
                .position(|item| matches!(item, Err(RecvError::Gap(_))))
                .expect("the gap is read");
            let messages: Vec<u64> = taken
                .iter()
                .filter_map(|item| item.as_ref().ok().map(|(message, _)| **message))
                .collect();
            assert_eq!(messages, [1, 2], "{taken:?}");
            let read_before_gap = taken[..gap].iter().filter(|item| item.is_ok()).count();
            assert!(
                read_before_gap as u64 >= before,
                "the gap came before a message queued before it: {taken:?} ({before} queued)"
            );
        });
    }
}
