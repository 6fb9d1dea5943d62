//! Delta generations (`Phoenix.Tracker.DeltaGeneration`): the deltas a
//! replica sent and received, accumulated into a few deltas of growing
//! size, from which a transfer request is answered with a delta when one
//! covers the requester's context, and with the entire state otherwise.

use super::clock::{self, Context, Name, Replica};
use super::state::{Delta, Pid, State, Transfer};

/// Phoenix's default generation sizes (values plus cloud dots).
pub const DEFAULT_MAX_DELTA_SIZES: [usize; 3] = [100, 1_000, 10_000];

/// A replica's delta generations: one accumulated delta per size limit.
#[derive(Clone, Debug)]
pub struct Generations<N, P, M> {
    generations: Vec<Delta<N, P, M>>,
    max_sizes: Vec<usize>,
}

impl<N: Name, P: Pid, M: Clone> Generations<N, P, M> {
    /// No generations yet, limited to `max_sizes` (one generation each).
    pub fn new(max_sizes: Vec<usize>) -> Self {
        Self {
            generations: Vec::new(),
            max_sizes,
        }
    }

    /// The generations, smallest first.
    pub fn as_slice(&self) -> &[Delta<N, P, M>] {
        &self.generations
    }

    /// Forgets every generation: what merging a full state does.
    pub fn clear(&mut self) {
        self.generations.clear();
    }

    /// Accumulates `delta` (sent or received) into each generation
    /// (`DeltaGeneration.push/4`). The first push starts every generation
    /// from `parent`'s pending delta. A generation that the delta does not
    /// touch stays as it is; one that would outgrow its limit takes the
    /// previous level's result instead.
    pub fn push(&mut self, parent: &State<N, P, M>, delta: &Delta<N, P, M>) {
        if self.generations.is_empty() {
            self.generations = vec![parent.delta().clone(); self.max_sizes.len()];
        }
        let mut previous = delta.clone();
        for (generation, max) in self.generations.iter_mut().zip(&self.max_sizes) {
            let mut merged = generation.clone();
            match merged.merge(delta) {
                Ok(()) => {
                    if merged.size() <= *max {
                        *generation = merged.clone();
                    } else {
                        *generation = previous;
                    }
                    previous = merged;
                }
                Err(_) => previous = generation.clone(),
            }
        }
    }

    /// What to answer a transfer request with context `remote_context`
    /// (`DeltaGeneration.extract/4`): the first generation whose range,
    /// limited to the requester's replicas, is not empty, starts at or
    /// before the requester's context and ends beyond it; otherwise the
    /// entire state. Either is limited to the requester's replicas.
    pub fn extract(
        &self,
        state: &State<N, P, M>,
        remote_context: &Context<N>,
    ) -> Transfer<N, P, M> {
        let fulfilling = self.generations.iter().find(|generation| {
            let start = clock::restrict(&generation.range.0, remote_context);
            let end = clock::restrict(&generation.range.1, remote_context);
            !clock::dominates_or_equal(&start, &end)
                && clock::dominates_or_equal(remote_context, &start)
                && !clock::dominates(remote_context, &end)
        });
        match fulfilling {
            Some(generation) => Transfer::Delta(generation.extract(remote_context)),
            None => Transfer::Full(state.extract(remote_context)),
        }
    }

    /// Forgets `replica` in every generation (it is permanently down).
    pub fn remove_replica(&mut self, replica: &Replica<N>) {
        for generation in &mut self.generations {
            generation.remove_replica(replica);
        }
    }
}
