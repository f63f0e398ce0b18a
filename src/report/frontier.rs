//! The frontier chart: per model × format × KV type, the largest context that fits each memory
//! size. The estimator's curve is dashed; each machine (a card, or a memory limit standing in for
//! a smaller one) adds a point at its memory: the largest context measured to run there.

use std::collections::BTreeMap;

use crate::estimate::{fit, predict, Query};
use crate::report::charts::{Chart, LineChart, Series, Style};
use crate::report::{Machine, Variant};
use crate::result::case::CaseEngine;
use crate::result::CaseResult;
use crate::units::gib;

/// Points on the estimator's curve.
const STEPS: usize = 32;

/// The estimator's largest context over memory sizes from what the model needs at one position
/// to `top` bytes, for the case `sample` ran (one sequence); None where the estimator does not
/// cover it.
fn predicted(sample: &CaseResult, top: u64) -> Option<Vec<(f64, f64)>> {
    let base = Query {
        batch: 1,
        ..Query::for_record(sample).ok()?
    };
    let max_position = predict(&base).ok()?.max_ctx;
    let at = |ctx| {
        predict(&Query {
            ctx,
            ..base.clone()
        })
        .ok()
        .map(|p| p.breakdown.total() as f64)
    };
    let lo = at(1)? * 0.98;
    let hi = (top as f64).max(at(max_position)? * 1.02);
    let mut out = Vec::new();
    for i in 0..=STEPS {
        let mem = lo * (hi / lo).powf(i as f64 / STEPS as f64);
        if let Ok(Some(ctx)) = fit::largest_ctx(&base, max_position, |t| (t as f64) <= mem) {
            out.push((mem / (1u64 << 30) as f64, ctx as f64));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The frontier chart over `machines`; None when none of them ran a one-sequence gemma-fit case.
pub fn chart(machines: &[&Machine], title: &str) -> Option<Chart> {
    // Per variant: each machine's memory and its finished one-sequence cases.
    let mut by: BTreeMap<Variant, Vec<(u64, Vec<&CaseResult>)>> = BTreeMap::new();
    for m in machines {
        let Some(cap) = m.capacity_bytes else {
            continue;
        };
        for r in m.records.iter().filter(|r| {
            r.outcome.is_ok()
                && r.metrics.is_some()
                && r.key.batch == 1
                && r.key.engine == CaseEngine::GemmaFit
                && r.quality.is_none()
        }) {
            let per = by.entry(Variant::of(r)).or_default();
            match per.iter_mut().find(|(c, _)| *c == cap) {
                Some((_, recs)) => recs.push(r),
                None => per.push((cap, vec![r])),
            }
        }
    }
    if by.is_empty() {
        return None;
    }
    let top = machines
        .iter()
        .filter_map(|m| m.capacity_bytes)
        .max()
        .unwrap_or(0);
    let mut series = Vec::new();
    for (i, (v, per)) in by.iter().enumerate() {
        let mut points: Vec<(f64, f64)> = per
            .iter()
            .filter_map(|(cap, recs)| {
                let ctx = recs.iter().map(|r| r.key.ctx).max()?;
                Some((gib(*cap), ctx as f64))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        // One legend entry per variant: the colour is what matters.
        let curve = predicted(per[0].1[0], top);
        let named = curve.is_none();
        series.push(Series {
            name: if named { v.label() } else { String::new() },
            points,
            style: Style::Line,
            color: Some(i),
        });
        if let Some(curve) = curve {
            series.push(Series {
                name: v.label(),
                points: curve,
                style: Style::Dashed,
                color: Some(i),
            });
        }
    }
    Some(Chart::Line(LineChart {
        title: title.into(),
        x_label: "memory (GiB) · dashed: the largest context that fits (predicted) · dots: the largest run (measured)".into(),
        y_label: "context (positions)".into(),
        log_x: true,
        log_y: true,
        series,
        hlines: vec![],
    }))
}
