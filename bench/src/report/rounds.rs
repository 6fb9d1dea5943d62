//! Rounds: every contender once per round, the order rotating; the
//! summary pairs each contender's rounds with ours.

use std::time::Duration;

/// What one contender did in one round.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Broadcasts or deliveries, as the workload counts them.
    pub items: f64,
    pub elapsed: Duration,
    /// Copies dropped from full queues (0 when the queues kept up).
    pub lagged: u64,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.items / self.elapsed.as_secs_f64()
    }
}

/// One contender of a workload: a round in, a sample out.
pub struct Contender<'a> {
    pub name: &'static str,
    run: Box<dyn FnMut(u64) -> Sample + 'a>,
    samples: Vec<Sample>,
}

impl<'a> Contender<'a> {
    pub fn new(name: &'static str, run: impl FnMut(u64) -> Sample + 'a) -> Self {
        Self {
            name,
            run: Box::new(run),
            samples: Vec::new(),
        }
    }
}

/// Runs one warm-up round and `rounds` measured rounds; in round `r` the
/// contenders start at `r % len` and go round.
pub fn alternate(workload: &str, rounds: usize, contenders: &mut [Contender<'_>]) {
    let len = contenders.len();
    for round in 0..=rounds {
        for k in 0..len {
            let contender = &mut contenders[(round + k) % len];
            let sample = (contender.run)(round as u64);
            if round > 0 {
                contender.samples.push(sample);
            }
        }
        eprint!("\r{workload}: round {round}/{rounds}   ");
    }
    eprintln!();
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() % 2 {
        0 => (values[mid - 1] + values[mid]) / 2.0,
        _ => values[mid],
    }
}

/// The summary of one contender on one workload.
#[derive(Clone, Debug)]
pub struct Row {
    pub workload: &'static str,
    pub contender: &'static str,
    pub unit: &'static str,
    /// Median rate (items per second).
    pub rate: f64,
    pub min: f64,
    pub max: f64,
    /// Median over rounds of ours / this contender, paired by round.
    pub ratio: Option<f64>,
    pub lagged: u64,
}

/// One row per contender; the first contender is ours.
pub fn summarise(
    workload: &'static str,
    unit: &'static str,
    contenders: &[Contender<'_>],
) -> Vec<Row> {
    let ours = &contenders[0].samples;
    contenders
        .iter()
        .map(|c| {
            let rates: Vec<f64> = c.samples.iter().map(Sample::rate).collect();
            let ratios: Vec<f64> = ours
                .iter()
                .zip(&c.samples)
                .map(|(o, s)| o.rate() / s.rate())
                .collect();
            Row {
                workload,
                contender: c.name,
                unit,
                rate: median(rates.clone()),
                min: rates.iter().copied().fold(f64::INFINITY, f64::min),
                max: rates.iter().copied().fold(0.0, f64::max),
                ratio: (!std::ptr::eq(c, &contenders[0])).then(|| median(ratios)),
                lagged: c.samples.iter().map(|s| s.lagged).sum(),
            }
        })
        .collect()
}

/// The row of `contender` on `workload`.
///
/// # Panics
///
/// If there is none (a figure names a workload or contender that the
/// workload table does not have).
pub fn find<'a>(rows: &'a [Row], workload: &str, contender: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.workload == workload && r.contender == contender)
        .unwrap_or_else(|| panic!("no row {workload} / {contender}"))
}
