//! `two_publishers`: the membership fan-out from two publisher threads,
//! each on its own team and person, against one; ours and naive.

use super::{membership, Env};
use crate::plan::Plan;
use crate::rounds::Contender;

pub fn contenders(env: &Env, plan: Plan) -> Vec<Contender<'_>> {
    let n = plan.two_publishers;
    vec![
        Contender::new("ours, 2 publishers", move |_| membership::ours(env, 2, n)),
        Contender::new("ours, 1 publisher", move |_| membership::ours(env, 1, n)),
        Contender::new("naive, 2 publishers", move |_| membership::naive(env, 2, n)),
        Contender::new("naive, 1 publisher", move |_| membership::naive(env, 1, n)),
    ]
}
