//! Offline evaluation of routing (`kairos eval routing`): replay prompts whose per-model outcomes
//! are known through the real funnel ([`crate::funnel::route`]) at a sweep of quality bars, and
//! measure quality retained against cost saved, next to the single models, the per-prompt oracle
//! and the zero router (mixing single models), plus RouteLLM's PGR / APGR / CPT for two-model data.
//!
//! Everything here is pure: the CLI (`kairos-server`'s `eval_cmd`) reads the JSONL, classifies the
//! prompts, drives the sweep and prints. `docs/routing.md (offline evaluation)` describes the method and the data
//! format.
//!
//! Metric definitions follow the sources cited in `docs/routing.md (offline evaluation)`:
//! - **PGR** at a point: `(q - q_weak) / (q_strong - q_weak)`.
//! - **APGR**: `(AUC_router - AUC_weak) / (AUC_strong - AUC_weak)`, AUC = trapezoid area under
//!   quality against the fraction of strong-model calls, over the points' range (RouteLLM's
//!   `evaluate.py`, `np.trapz(accuracy, strong_percentage / 100)`).
//! - **CPT(x)**: the % of strong calls at which the curve reaches `q_weak + x (q_strong - q_weak)`,
//!   interpolated linearly between points (RouteLLM's `np.interp`). We take the *first* crossing;
//!   this equals `np.interp` whenever quality does not decrease with strong calls (what `np.interp`
//!   assumes), and stays defined when it does.
//! - **Zero router / AIQ** (RouterBench): the upper non-decreasing convex hull of (cost, quality)
//!   points; AIQ is its mean height over a cost range.

use serde::Serialize;

use crate::TaskType;
use crate::funnel::{BarSource, Candidate, Prices, RouteInput, route, tasks_to_check};
use crate::learn::{LearnConfig, Learner, ObsKey, Observation, Query};

/// Expected quality `(mean, std)` per task type (indexed by [`TaskType::index`]), as the funnel
/// takes it.
pub type QualityRow = [Option<(f64, f64)>; 12];

/// Pseudo-observations of a model's overall (all-task) mean that a fitted per-task mean is shrunk
/// towards: a task seen on 10 training prompts is half its own average, half the model's.
pub const FIT_PRIOR_WEIGHT: f64 = 10.0;

/// One model of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Model {
    pub name: String,
    /// Micro-USD per 1M tokens.
    pub prices: Prices,
}

/// What one model did on one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// In `[0, 1]` (1 = correct / best).
    pub quality: f64,
    /// Tokens the model produced (billed at its output price).
    pub output_tokens: u64,
}

/// One prompt, classified, with every model's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub id: String,
    /// The task it is routed as (the classifier's answer, or the dataset's label).
    pub task: TaskType,
    pub confidence: f32,
    pub probs: [f32; 12],
    pub input_tokens: u64,
    /// Output tokens the router budgets when comparing candidates (the gateway's estimate for
    /// the task; the real counts are only known afterwards).
    pub est_output_tokens: u64,
    /// One per model, in the order of the models.
    pub outcomes: Vec<Outcome>,
    /// The prompt's embedding ([`crate::embed::Embedder`]); empty when not computed.
    pub embedding: Vec<f32>,
}

impl Prompt {
    /// What answering this prompt with model `m` cost, in USD.
    pub fn cost_usd(&self, models: &[Model], m: usize) -> f64 {
        cost_usd(
            models[m].prices,
            self.input_tokens,
            self.outcomes[m].output_tokens,
        )
    }
}

/// Exact (unrounded) cost in USD of `input` and `output` tokens at `p` (micro-USD per 1M tokens).
pub fn cost_usd(p: Prices, input: u64, output: u64) -> f64 {
    (input as f64 * p.input as f64 + output as f64 * p.output as f64) / 1e12
}

/// A number in `[0, 1)` that depends only on `id` and `seed`: FNV-1a over the seed's bytes and
/// the id's, finished with SplitMix64's mixer.
pub fn split_unit(id: &str, seed: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether `id` belongs to the training split (a fraction `train_fraction` of ids, chosen by
/// hash: deterministic, independent of the file's order).
pub fn in_train(id: &str, seed: u64, train_fraction: f64) -> bool {
    split_unit(id, seed) < train_fraction
}

/// Fits each model's expected quality per task on `train` (the prompts' routing task as the
/// label): a Beta-style posterior mean shrunk towards the model's overall training mean with
/// [`FIT_PRIOR_WEIGHT`] pseudo-observations, so tasks with few (or no) training prompts fall
/// back to the model's average; `std = sqrt(mean (1 - mean) / (n + w + 1))`, the uncertainty of
/// that mean (the same meaning as the built-in priors' `std`). No training prompts: no evidence.
pub fn fit_quality(train: &[Prompt], n_models: usize) -> Vec<QualityRow> {
    let mut rows = vec![[None; 12]; n_models];
    if train.is_empty() {
        return rows;
    }
    for (m, row) in rows.iter_mut().enumerate() {
        let mut sum = [0.0f64; 12];
        let mut count = [0.0f64; 12];
        for p in train {
            sum[p.task.index()] += p.outcomes[m].quality;
            count[p.task.index()] += 1.0;
        }
        let overall = sum.iter().sum::<f64>() / train.len() as f64;
        for t in TaskType::ALL {
            let i = t.index();
            let n = count[i] + FIT_PRIOR_WEIGHT;
            let mean = (sum[i] + FIT_PRIOR_WEIGHT * overall) / n;
            let std = (mean * (1.0 - mean) / (n + 1.0)).sqrt();
            row[i] = Some((mean, std));
        }
    }
    rows
}

/// The funnel's candidates for the models: every capability, allowed, healthy, no context
/// limit (the dataset says they answered), the given quality estimates.
pub fn candidates(models: &[Model], quality: &[QualityRow]) -> Vec<Candidate> {
    models
        .iter()
        .zip(quality)
        .map(|(m, q)| Candidate {
            model: m.name.clone(),
            provider: "eval".into(),
            prices: Some(m.prices),
            context_window: None,
            tools: true,
            vision: true,
            json_mode: true,
            allowed: true,
            healthy: true,
            latency_ms: None,
            quality: *q,
        })
        .collect()
}

/// The funnel's input for `p` at quality bar `bar` (as the gateway builds it for a request
/// without tools, images, JSON mode, cost ceiling or `strict`).
pub fn route_input(p: &Prompt, bar: f64) -> RouteInput {
    RouteInput {
        task: p.task,
        confidence: p.confidence,
        probs: p.probs,
        input_tokens: p.input_tokens,
        output_tokens: p.est_output_tokens,
        needs_tools: false,
        needs_vision: false,
        needs_json: false,
        bar,
        bar_source: BarSource::Default,
        max_cost_micros: None,
        strict: false,
        value_usd: None,
    }
}

/// Where the funnel sends every prompt at one bar.
#[derive(Debug, Clone, PartialEq)]
pub struct BarRun {
    pub bar: f64,
    /// Chosen model index per prompt.
    pub choices: Vec<usize>,
    /// Prompts for which some candidate cleared the bar (else: best expected quality).
    pub bar_met: usize,
}

/// Routes every prompt with the real funnel at `bar`. (Not strict and every candidate eligible,
/// so the funnel always chooses; were it not to, `fallback` is used.)
pub fn run_bar(prompts: &[Prompt], cands: &[Candidate], bar: f64, fallback: usize) -> BarRun {
    let mut bar_met = 0;
    let choices = prompts
        .iter()
        .map(|p| {
            let d = route(&route_input(p, bar), cands);
            bar_met += usize::from(d.bar_met);
            d.chosen.unwrap_or(fallback)
        })
        .collect();
    BarRun {
        bar,
        choices,
        bar_met,
    }
}

/// Mean outcome quality, total cost and calls per model of one assignment of prompts to models.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub quality: f64,
    pub cost_usd: f64,
    /// Calls per model, in the order of the models.
    pub calls: Vec<usize>,
}

/// Scores `choices` (a model index per prompt) with the prompts' outcomes.
pub fn score(prompts: &[Prompt], models: &[Model], choices: &[usize]) -> Point {
    let mut calls = vec![0; models.len()];
    let mut quality = 0.0;
    let mut cost = 0.0;
    for (p, &m) in prompts.iter().zip(choices) {
        calls[m] += 1;
        quality += p.outcomes[m].quality;
        cost += p.cost_usd(models, m);
    }
    Point {
        quality: if prompts.is_empty() {
            0.0
        } else {
            quality / prompts.len() as f64
        },
        cost_usd: cost,
        calls,
    }
}

/// Per prompt, the cheapest model among those with the best outcome (ties: the first model).
pub fn oracle_choices(prompts: &[Prompt], models: &[Model]) -> Vec<usize> {
    prompts
        .iter()
        .map(|p| {
            let mut best = 0;
            for m in 1..models.len() {
                let (q, qb) = (p.outcomes[m].quality, p.outcomes[best].quality);
                if q > qb || (q == qb && p.cost_usd(models, m) < p.cost_usd(models, best)) {
                    best = m;
                }
            }
            best
        })
        .collect()
}

/// The upper, non-decreasing convex hull of `(cost, quality)` points, sorted by cost: the best
/// quality reachable at each cost by mixing the points at random (RouterBench's zero router when
/// the points are single models; a router's achievable curve when they are its operating
/// points). Non-finite points are ignored.
pub fn hull(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(c, q)| c.is_finite() && q.is_finite())
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut h: Vec<(f64, f64)> = Vec::new();
    for p in pts {
        // Non-decreasing: a point no better than a cheaper one is dominated.
        if h.last().is_some_and(|l| p.1 <= l.1) {
            continue;
        }
        // Upper hull: drop the last vertex while it lies on or below the chord to `p`.
        while h.len() >= 2 {
            let (o, a) = (h[h.len() - 2], h[h.len() - 1]);
            let cross = (a.0 - o.0) * (p.1 - o.1) - (a.1 - o.1) * (p.0 - o.0);
            if cross >= 0.0 {
                h.pop();
            } else {
                break;
            }
        }
        h.push(p);
    }
    h
}

/// The hull's quality at `cost`: None below its cheapest vertex, flat after its last.
pub fn hull_at(h: &[(f64, f64)], cost: f64) -> Option<f64> {
    let first = h.first()?;
    if cost < first.0 {
        return None;
    }
    for w in h.windows(2) {
        let (a, b) = (w[0], w[1]);
        if cost <= b.0 {
            return Some(a.1 + (cost - a.0) / (b.0 - a.0) * (b.1 - a.1));
        }
    }
    h.last().map(|l| l.1)
}

/// The lowest cost at which the hull reaches quality `q` (None: it never does).
pub fn hull_min_cost(h: &[(f64, f64)], q: f64) -> Option<f64> {
    let first = h.first()?;
    if q <= first.1 {
        return Some(first.0);
    }
    for w in h.windows(2) {
        let (a, b) = (w[0], w[1]);
        if q <= b.1 {
            return Some(a.0 + (q - a.1) / (b.1 - a.1) * (b.0 - a.0));
        }
    }
    None
}

/// RouterBench's AIQ: the mean height over `[lo, hi]` of the hull of `points` (counted as 0
/// below the hull's cheapest point, flat after its last). None for an empty range or no points.
pub fn aiq(points: &[(f64, f64)], lo: f64, hi: f64) -> Option<f64> {
    let h = hull(points);
    if h.is_empty() || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let mut xs: Vec<f64> = vec![lo, hi];
    xs.extend(h.iter().map(|p| p.0).filter(|&c| c > lo && c < hi));
    xs.sort_by(f64::total_cmp);
    let start = h[0].0;
    let mut area = 0.0;
    for w in xs.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b <= start {
            continue;
        }
        let fa = hull_at(&h, a.max(start)).unwrap_or(0.0);
        let fb = hull_at(&h, b).unwrap_or(0.0);
        area += (b - a.max(start)) * (fa + fb) / 2.0;
    }
    Some(area / (hi - lo))
}

/// One point of a two-model curve: % of calls to the strong model, mean quality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CallPoint {
    pub strong_pct: f64,
    pub quality: f64,
}

fn sorted_curve(curve: &[CallPoint]) -> Vec<CallPoint> {
    let mut s = curve.to_vec();
    s.sort_by(|a, b| {
        a.strong_pct
            .total_cmp(&b.strong_pct)
            .then(a.quality.total_cmp(&b.quality))
    });
    s
}

/// Performance gap recovered: `(q - weak) / (strong - weak)`; None when the models tie.
pub fn pgr(q: f64, weak: f64, strong: f64) -> Option<f64> {
    let gap = strong - weak;
    (gap.abs() > 1e-12).then(|| (q - weak) / gap)
}

/// Trapezoid area under quality against the strong-call fraction (`strong_pct / 100`), over the
/// points sorted by strong calls (RouteLLM's `auc_metric`).
pub fn auc(curve: &[CallPoint]) -> f64 {
    sorted_curve(curve)
        .windows(2)
        .map(|w| (w[1].strong_pct - w[0].strong_pct) / 100.0 * (w[0].quality + w[1].quality) / 2.0)
        .sum()
}

/// Average performance gap recovered (RouteLLM's `apgr_metric`): the AUCs of the constant weak and
/// strong qualities are taken over the same strong-call range as the curve's. None when the curve
/// spans no range or the models tie.
pub fn apgr(curve: &[CallPoint], weak: f64, strong: f64) -> Option<f64> {
    let s = sorted_curve(curve);
    let span = (s.last()?.strong_pct - s.first()?.strong_pct) / 100.0;
    if span <= 0.0 {
        return None;
    }
    let (weak_auc, strong_auc) = (weak * span, strong * span);
    let denom = strong_auc - weak_auc;
    (denom.abs() > 1e-12).then(|| (auc(&s) - weak_auc) / denom)
}

/// Call-performance threshold: the % of strong-model calls needed to reach PGR `x` (0.5 for
/// CPT(50%)), interpolated linearly on the curve sorted by strong calls; the first crossing.
/// None when the curve never reaches it or the strong model is not better than the weak.
pub fn cpt(curve: &[CallPoint], weak: f64, strong: f64, x: f64) -> Option<f64> {
    if strong <= weak {
        return None;
    }
    let target = weak + x * (strong - weak);
    let s = sorted_curve(curve);
    let first = s.first()?;
    if first.quality >= target {
        return Some(first.strong_pct);
    }
    s.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        (b.quality >= target).then(|| {
            a.strong_pct
                + (target - a.quality) / (b.quality - a.quality) * (b.strong_pct - a.strong_pct)
        })
    })
}

/// RouteLLM's optimal router at a budget of `strong_pct`% strong calls (`get_optimal_accuracy`):
/// the weak model everywhere, then the strong model on the prompts where it gains the most,
/// `n · strong_pct / 100` of them (a fractional last one, as RouteLLM's MMLU version; for 0/1
/// outcomes this is `weak_correct + min(strong_calls, prompts only the strong one gets right)`).
pub fn optimal_quality(weak: &[f64], strong: &[f64], strong_pct: f64) -> f64 {
    let n = weak.len();
    if n == 0 {
        return 0.0;
    }
    let mut gains: Vec<f64> = weak
        .iter()
        .zip(strong)
        .map(|(w, s)| s - w)
        .filter(|g| *g > 0.0)
        .collect();
    gains.sort_by(|a, b| b.total_cmp(a));
    let budget = (n as f64 * strong_pct / 100.0).max(0.0);
    let whole = budget.floor() as usize;
    let mut total: f64 = weak.iter().sum::<f64>() + gains.iter().take(whole).sum::<f64>();
    if let Some(g) = gains.get(whole) {
        total += (budget - whole as f64) * g;
    }
    total / n as f64
}

/// A single assignment of prompts, relative to the reference model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub quality: f64,
    pub cost_usd: f64,
    /// `100 · quality / reference quality`.
    pub retained_pct: Option<f64>,
    /// `100 · (1 - cost / reference cost)`.
    pub saved_pct: Option<f64>,
    /// % of calls per model, in the order of the models.
    pub calls_pct: Vec<f64>,
}

/// One model answering everything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelLine {
    pub name: String,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    #[serde(flatten)]
    pub line: Line,
}

/// The router at one bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    pub bar: f64,
    #[serde(flatten)]
    pub line: Line,
    /// % of prompts for which a model cleared the bar (the rest got the best expected quality).
    pub bar_met_pct: f64,
    /// What mixing single models at random reaches at the same cost (None below the cheapest).
    pub zero_router_quality: Option<f64>,
    /// Two-model data: performance gap recovered.
    pub pgr: Option<f64>,
}

/// The router's best operating point under a quality constraint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operating {
    pub bar: f64,
    pub quality: f64,
    pub retained_pct: f64,
    pub saved_pct: f64,
}

/// Max cost saved at ≥ 95% and ≥ 99% of the reference quality.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Headline {
    /// The router's sweep point saving the most with ≥ 95% retained (None: no such point).
    pub router_at_95: Option<Operating>,
    pub router_at_99: Option<Operating>,
    /// The zero router's saving at exactly 95% / 99% retained (interpolated on its hull).
    pub zero_router_saved_pct_at_95: Option<f64>,
    pub zero_router_saved_pct_at_99: Option<f64>,
}

/// RouterBench AIQ over the single models' cost range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AiqReport {
    pub cost_lo_usd: f64,
    pub cost_hi_usd: f64,
    pub router: Option<f64>,
    pub zero_router: Option<f64>,
}

/// RouteLLM's metrics for two-model data (weak = the cheaper model on this data).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TwoModel {
    pub weak: String,
    pub strong: String,
    pub weak_quality: f64,
    pub strong_quality: f64,
    pub apgr: Option<f64>,
    pub cpt20_pct: Option<f64>,
    pub cpt50_pct: Option<f64>,
    pub cpt80_pct: Option<f64>,
    /// The router's curve (one point per bar).
    pub curve: Vec<CallPoint>,
    /// RouteLLM's optimal router at 0, 1, ..., 100 % strong calls, and its APGR / CPT.
    pub optimal_apgr: Option<f64>,
    pub optimal_cpt50_pct: Option<f64>,
    pub optimal_cpt80_pct: Option<f64>,
}

/// Everything `kairos eval routing` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub n_prompts: usize,
    pub reference: String,
    pub cheapest: String,
    pub models: Vec<ModelLine>,
    pub sweep: Vec<SweepRow>,
    pub oracle: Line,
    /// The zero router's hull vertices, `(cost_usd, quality)`.
    pub zero_router: Vec<(f64, f64)>,
    pub headline: Headline,
    pub aiq: AiqReport,
    pub two_model: Option<TwoModel>,
}

fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn line(p: &Point, reference: &Point, n: usize) -> Line {
    Line {
        quality: p.quality,
        cost_usd: p.cost_usd,
        retained_pct: (reference.quality > 0.0).then(|| 100.0 * p.quality / reference.quality),
        saved_pct: (reference.cost_usd > 0.0)
            .then(|| 100.0 * (1.0 - p.cost_usd / reference.cost_usd)),
        calls_pct: p.calls.iter().map(|&c| pct(c, n)).collect(),
    }
}

/// Builds the report from the test prompts and the funnel's choices at each bar.
pub fn report(prompts: &[Prompt], models: &[Model], reference: usize, runs: &[BarRun]) -> Report {
    let n = prompts.len();
    let singles: Vec<Point> = (0..models.len())
        .map(|m| score(prompts, models, &vec![m; n]))
        .collect();
    let ref_point = &singles[reference];
    let cheapest = (0..models.len())
        .min_by(|&a, &b| {
            singles[a]
                .cost_usd
                .total_cmp(&singles[b].cost_usd)
                .then(singles[b].quality.total_cmp(&singles[a].quality))
        })
        .unwrap_or(reference);
    let zero: Vec<(f64, f64)> = hull(
        &singles
            .iter()
            .map(|p| (p.cost_usd, p.quality))
            .collect::<Vec<_>>(),
    );

    // Two models: weak = the cheaper one on this data.
    let pair = (models.len() == 2).then(|| {
        let strong = 1 - cheapest;
        (cheapest, strong)
    });

    let points: Vec<Point> = runs
        .iter()
        .map(|r| score(prompts, models, &r.choices))
        .collect();
    let sweep: Vec<SweepRow> = runs
        .iter()
        .zip(&points)
        .map(|(r, p)| SweepRow {
            bar: r.bar,
            line: line(p, ref_point, n),
            bar_met_pct: pct(r.bar_met, n),
            // (A relative epsilon: the always-cheapest point sums the same costs in the same order.)
            zero_router_quality: hull_at(&zero, p.cost_usd * (1.0 + 1e-12)),
            pgr: pair.and_then(|(w, s)| pgr(p.quality, singles[w].quality, singles[s].quality)),
        })
        .collect();

    let best_at = |min_retained: f64| {
        sweep
            .iter()
            .filter_map(|row| {
                let (r, s) = (row.line.retained_pct?, row.line.saved_pct?);
                (r >= min_retained).then_some((row, r, s))
            })
            // Most saved, then most retained, then the lowest bar.
            .reduce(|best, x| {
                if x.2.total_cmp(&best.2).then(x.1.total_cmp(&best.1))
                    == std::cmp::Ordering::Greater
                {
                    x
                } else {
                    best
                }
            })
            .map(|(row, r, s)| Operating {
                bar: row.bar,
                quality: row.line.quality,
                retained_pct: r,
                saved_pct: s,
            })
    };
    let zero_saved_at = |retained: f64| {
        let c = hull_min_cost(&zero, retained / 100.0 * ref_point.quality)?;
        (ref_point.cost_usd > 0.0).then(|| 100.0 * (1.0 - c / ref_point.cost_usd))
    };
    let headline = Headline {
        router_at_95: best_at(95.0),
        router_at_99: best_at(99.0),
        zero_router_saved_pct_at_95: zero_saved_at(95.0),
        zero_router_saved_pct_at_99: zero_saved_at(99.0),
    };

    let (lo, hi) = singles
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.cost_usd), hi.max(p.cost_usd))
        });
    let router_pts: Vec<(f64, f64)> = points.iter().map(|p| (p.cost_usd, p.quality)).collect();
    let single_pts: Vec<(f64, f64)> = singles.iter().map(|p| (p.cost_usd, p.quality)).collect();
    let aiq_report = AiqReport {
        cost_lo_usd: lo,
        cost_hi_usd: hi,
        router: aiq(&router_pts, lo, hi),
        zero_router: aiq(&single_pts, lo, hi),
    };

    let two_model = pair.map(|(w, s)| {
        let (qw, qs) = (singles[w].quality, singles[s].quality);
        let curve: Vec<CallPoint> = points
            .iter()
            .map(|p| CallPoint {
                strong_pct: pct(p.calls[s], n),
                quality: p.quality,
            })
            .collect();
        let wq: Vec<f64> = prompts.iter().map(|p| p.outcomes[w].quality).collect();
        let sq: Vec<f64> = prompts.iter().map(|p| p.outcomes[s].quality).collect();
        let optimal: Vec<CallPoint> = (0..=100)
            .map(|k| CallPoint {
                strong_pct: f64::from(k),
                quality: optimal_quality(&wq, &sq, f64::from(k)),
            })
            .collect();
        TwoModel {
            weak: models[w].name.clone(),
            strong: models[s].name.clone(),
            weak_quality: qw,
            strong_quality: qs,
            apgr: apgr(&curve, qw, qs),
            cpt20_pct: cpt(&curve, qw, qs, 0.2),
            cpt50_pct: cpt(&curve, qw, qs, 0.5),
            cpt80_pct: cpt(&curve, qw, qs, 0.8),
            curve,
            optimal_apgr: apgr(&optimal, qw, qs),
            optimal_cpt50_pct: cpt(&optimal, qw, qs, 0.5),
            optimal_cpt80_pct: cpt(&optimal, qw, qs, 0.8),
        }
    });

    Report {
        n_prompts: n,
        reference: models[reference].name.clone(),
        cheapest: models[cheapest].name.clone(),
        models: models
            .iter()
            .zip(&singles)
            .map(|(m, p)| ModelLine {
                name: m.name.clone(),
                input_usd_per_mtok: m.prices.input as f64 / 1e6,
                output_usd_per_mtok: m.prices.output as f64 / 1e6,
                line: line(p, ref_point, n),
            })
            .collect(),
        sweep,
        oracle: line(
            &score(prompts, models, &oracle_choices(prompts, models)),
            ref_point,
            n,
        ),
        zero_router: zero,
        headline,
        aiq: aiq_report,
        two_model,
    }
}

/// Per routing task: how many prompts, and each model's mean outcome (test) and estimate used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    pub task: TaskType,
    pub n_train: usize,
    pub n_test: usize,
    /// Mean outcome per model on the test prompts of this task (None: no test prompt).
    pub observed: Vec<Option<f64>>,
    /// The estimate the router used, per model.
    pub estimated: Vec<Option<f64>>,
}

/// The per-task breakdown (tasks with at least one prompt), in [`TaskType::ALL`] order.
pub fn task_breakdown(train: &[Prompt], test: &[Prompt], quality: &[QualityRow]) -> Vec<TaskRow> {
    TaskType::ALL
        .into_iter()
        .filter_map(|t| {
            let n_train = train.iter().filter(|p| p.task == t).count();
            let tp: Vec<&Prompt> = test.iter().filter(|p| p.task == t).collect();
            if n_train + tp.len() == 0 {
                return None;
            }
            let observed = (0..quality.len())
                .map(|m| {
                    (!tp.is_empty()).then(|| {
                        tp.iter().map(|p| p.outcomes[m].quality).sum::<f64>() / tp.len() as f64
                    })
                })
                .collect();
            Some(TaskRow {
                task: t,
                n_train,
                n_test: tp.len(),
                observed,
                estimated: quality.iter().map(|q| q[t.index()].map(|x| x.0)).collect(),
            })
        })
        .collect()
}

/// The value-rule sweep of `kairos eval routing --warm`: for each value of a good answer
/// (USD), where the test prompts went with learned estimates (warm) or with task-level estimates
/// fitted on the whole training split (cold).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueRun {
    pub value_usd: f64,
    /// Chosen model per test prompt.
    pub choices: Vec<usize>,
    /// Training prompts that explored (warm only).
    pub explored: usize,
    /// Outcomes observed per model during the training replay (warm only).
    pub observed: Vec<usize>,
}

/// Values of a good answer swept by the warm mode: `per_decade` geometric steps from `lo` to
/// `hi` USD (both included).
pub fn value_grid(lo: f64, hi: f64, per_decade: usize) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let n = (decades * per_decade as f64).round() as usize;
    (0..=n)
        .map(|i| lo * 10f64.powf(decades * i as f64 / n.max(1) as f64))
        .collect()
}

/// The funnel's input for `p` under the value rule (bar 0: the value decides).
fn value_input(p: &Prompt, value: f64) -> RouteInput {
    let mut i = route_input(p, 0.0);
    i.value_usd = Some(value);
    i
}

/// Candidates whose quality, for every task the funnel will check for `p` (its task, or every
/// plausible one when the classifier is unsure), is the learner's estimate (or a Thompson draw
/// from it), as the gateway does.
fn learned_candidates(
    learner: &Learner,
    p: &Prompt,
    base: &[Candidate],
    sample: Option<&mut rand::rngs::StdRng>,
) -> Vec<Candidate> {
    let queries: Vec<Query<'_>> = base
        .iter()
        .map(|c| Query {
            model: &c.model,
            prior: &c.quality,
        })
        .collect();
    let tasks = tasks_to_check(&route_input(p, 0.0));
    let emb = (!p.embedding.is_empty()).then_some(&p.embedding[..]);
    let est = learner.estimate("", &tasks, emb, &queries);
    let mut out = base.to_vec();
    let mut rng = sample;
    for (c, e) in out.iter_mut().zip(&est) {
        let qs: Vec<f64> = match rng.as_deref_mut() {
            Some(r) => crate::learn::Evidence::sample_tasks(e, r),
            None => e.iter().map(|ev| ev.mean).collect(),
        };
        for ((t, ev), q) in tasks.iter().zip(e).zip(qs) {
            c.quality[t.index()] = Some((q, ev.std()));
        }
    }
    out
}

/// Warm routing at one value of a good answer: replay `train` as production traffic (the
/// learner sees only the chosen model's outcome, as from feedback; a share `cfg.explore` of
/// decisions explores by Thompson sampling), then route `test` greedily on the learned state
/// (no exploration, no learning from the test prompts).
///
/// `priors` are the candidates' quality rows before any outcome (a neutral 0.5 row for models
/// without priors). Deterministic for a given `seed`.
pub fn warm_run(
    train: &[Prompt],
    test: &[Prompt],
    base: &[Candidate],
    cfg: LearnConfig,
    value: f64,
    seed: u64,
) -> ValueRun {
    use rand::{RngExt, SeedableRng};
    let learner = Learner::new(cfg);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut explored = 0;
    let mut observed = vec![0; base.len()];
    for p in train {
        let explore = cfg.explore > 0.0 && rng.random::<f64>() < cfg.explore;
        let cands = if explore {
            explored += 1;
            learned_candidates(&learner, p, base, Some(&mut rng))
        } else {
            learned_candidates(&learner, p, base, None)
        };
        let Some(m) = route(&value_input(p, value), &cands).chosen else {
            continue;
        };
        observed[m] += 1;
        learner.observe(&Observation {
            key: ObsKey {
                request_id: p.id.clone(),
                metric: "score".into(),
                model: base[m].model.clone(),
            },
            workspace: String::new(),
            task: Some(p.task),
            embedding: (!p.embedding.is_empty()).then(|| p.embedding.clone()),
            score: p.outcomes[m].quality,
            weight: 1.0,
        });
    }
    let choices = test
        .iter()
        .map(|p| {
            let cands = learned_candidates(&learner, p, base, None);
            route(&value_input(p, value), &cands).chosen.unwrap_or(0)
        })
        .collect();
    ValueRun {
        value_usd: value,
        choices,
        explored,
        observed,
    }
}

/// Cold routing at one value of a good answer: the fixed per-(model, task) estimates in
/// `cands` (no per-prompt signal, no learning).
pub fn cold_value_run(test: &[Prompt], cands: &[Candidate], value: f64) -> ValueRun {
    ValueRun {
        value_usd: value,
        choices: test
            .iter()
            .map(|p| route(&value_input(p, value), cands).chosen.unwrap_or(0))
            .collect(),
        explored: 0,
        observed: Vec::new(),
    }
}

/// One point of a value sweep, scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueRow {
    pub value_usd: f64,
    #[serde(flatten)]
    pub line: Line,
    pub explored: usize,
    pub observed: Vec<usize>,
}

/// A scored value sweep and its headline (the largest saving with ≥ 95% / ≥ 99% of the
/// reference's quality retained, over the swept values).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueSweep {
    pub rows: Vec<ValueRow>,
    pub at_95: Option<ValueRow>,
    pub at_99: Option<ValueRow>,
}

pub fn value_sweep(
    prompts: &[Prompt],
    models: &[Model],
    reference: usize,
    runs: &[ValueRun],
) -> ValueSweep {
    let refp = score(prompts, models, &vec![reference; prompts.len()]);
    let n = prompts.len();
    let rows: Vec<ValueRow> = runs
        .iter()
        .map(|r| ValueRow {
            value_usd: r.value_usd,
            line: line(&score(prompts, models, &r.choices), &refp, n),
            explored: r.explored,
            observed: r.observed.clone(),
        })
        .collect();
    let best = |min: f64| {
        rows.iter()
            .filter(|r| r.line.retained_pct.is_some_and(|x| x >= min))
            .max_by(|a, b| {
                a.line
                    .saved_pct
                    .unwrap_or(f64::MIN)
                    .total_cmp(&b.line.saved_pct.unwrap_or(f64::MIN))
            })
            .cloned()
    };
    ValueSweep {
        at_95: best(95.0),
        at_99: best(99.0),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn model(name: &str, usd_in: u64, usd_out: u64) -> Model {
        Model {
            name: name.into(),
            prices: Prices {
                input: usd_in * 1_000_000,
                output: usd_out * 1_000_000,
            },
        }
    }

    fn prompt(id: &str, task: TaskType, outcomes: &[f64]) -> Prompt {
        let mut probs = [0.0; 12];
        probs[task.index()] = 1.0;
        Prompt {
            id: id.into(),
            task,
            confidence: 1.0,
            probs,
            input_tokens: 1_000_000,
            est_output_tokens: 0,
            outcomes: outcomes
                .iter()
                .map(|&q| Outcome {
                    quality: q,
                    output_tokens: 0,
                })
                .collect(),
            embedding: Vec::new(),
        }
    }

    fn curve(points: &[(f64, f64)]) -> Vec<CallPoint> {
        points
            .iter()
            .map(|&(strong_pct, quality)| CallPoint {
                strong_pct,
                quality,
            })
            .collect()
    }

    #[test]
    fn cost_is_exact_per_token() {
        let p = Prices {
            input: 600_000,
            output: 30_000_000,
        };
        assert!(close(cost_usd(p, 1000, 1), 0.0006 + 0.00003));
    }

    #[test]
    fn apgr_of_always_weak_is_0_of_always_strong_is_1_of_random_is_half() {
        let (w, s) = (0.6, 0.8);
        let xs = [0.0, 25.0, 50.0, 75.0, 100.0];
        let weak: Vec<_> = xs.iter().map(|&x| (x, w)).collect();
        let strong: Vec<_> = xs.iter().map(|&x| (x, s)).collect();
        let random: Vec<_> = xs.iter().map(|&x| (x, w + (s - w) * x / 100.0)).collect();
        assert!(close(apgr(&curve(&weak), w, s).unwrap(), 0.0));
        assert!(close(apgr(&curve(&strong), w, s).unwrap(), 1.0));
        assert!(close(apgr(&curve(&random), w, s).unwrap(), 0.5));
        // CPT of random mixing is x itself; of always-strong, the cheapest point.
        assert!(close(cpt(&curve(&random), w, s, 0.5).unwrap(), 50.0));
        assert!(close(cpt(&curve(&random), w, s, 0.8).unwrap(), 80.0));
        assert!(close(cpt(&curve(&strong), w, s, 0.8).unwrap(), 0.0));
        assert_eq!(cpt(&curve(&weak), w, s, 0.5), None);
        // Degenerate: no span, or models that tie.
        assert_eq!(apgr(&curve(&[(30.0, 0.7)]), w, s), None);
        assert_eq!(apgr(&curve(&random), 0.7, 0.7), None);
    }

    #[test]
    fn apgr_and_cpt_of_the_oracle_by_hand() {
        // 4 prompts: weak right on #0 only, strong right on #0, #1, #2.
        let weak = [1.0, 0.0, 0.0, 0.0];
        let strong = [1.0, 1.0, 1.0, 0.0];
        // Optimal: (1 + min(4p, 2)) / 4.
        assert!(close(optimal_quality(&weak, &strong, 0.0), 0.25));
        assert!(close(optimal_quality(&weak, &strong, 25.0), 0.5));
        assert!(close(optimal_quality(&weak, &strong, 37.5), 0.625)); // 1.5 strong calls
        assert!(close(optimal_quality(&weak, &strong, 50.0), 0.75));
        assert!(close(optimal_quality(&weak, &strong, 100.0), 0.75));
        let c: Vec<CallPoint> = (0..=100)
            .map(|k| CallPoint {
                strong_pct: f64::from(k),
                quality: optimal_quality(&weak, &strong, f64::from(k)),
            })
            .collect();
        // AUC = 0.5 * (0.25 + 0.75) / 2 + 0.5 * 0.75 = 0.625; APGR = (0.625 - 0.25) / 0.5.
        assert!(close(auc(&c), 0.625));
        assert!(close(apgr(&c, 0.25, 0.75).unwrap(), 0.75));
        assert!(close(cpt(&c, 0.25, 0.75, 0.5).unwrap(), 25.0));
        assert!(close(cpt(&c, 0.25, 0.75, 0.8).unwrap(), 40.0));
    }

    #[test]
    fn auc_and_cpt_use_the_points_sorted_by_strong_calls() {
        let c = curve(&[(100.0, 0.8), (0.0, 0.6), (40.0, 0.75)]);
        // 0.4 * (0.6 + 0.75) / 2 + 0.6 * (0.75 + 0.8) / 2 = 0.27 + 0.465.
        assert!(close(auc(&c), 0.735));
        assert!(close(apgr(&c, 0.6, 0.8).unwrap(), (0.735 - 0.6) / 0.2));
        // Target 0.7: between (0, 0.6) and (40, 0.75), at 40 * 0.1 / 0.15.
        assert!(close(cpt(&c, 0.6, 0.8, 0.5).unwrap(), 40.0 * 0.1 / 0.15));
        // A dip: the first crossing counts.
        let dip = curve(&[(0.0, 0.6), (20.0, 0.72), (50.0, 0.65), (100.0, 0.8)]);
        assert!(close(cpt(&dip, 0.6, 0.8, 0.5).unwrap(), 20.0 * 0.1 / 0.12));
        assert!(close(pgr(0.7, 0.6, 0.8).unwrap(), 0.5));
        assert_eq!(pgr(0.7, 0.6, 0.6), None);
    }

    #[test]
    fn hull_keeps_the_upper_non_decreasing_boundary() {
        // (2, 0.5) is below the chord from (1, 0.4) to (3, 0.9); (4, 0.8) is dominated.
        let h = hull(&[(3.0, 0.9), (1.0, 0.4), (2.0, 0.5), (4.0, 0.8), (1.0, 0.3)]);
        assert_eq!(h, vec![(1.0, 0.4), (3.0, 0.9)]);
        assert_eq!(hull_at(&h, 0.5), None);
        assert!(close(hull_at(&h, 2.0).unwrap(), 0.65));
        assert!(close(hull_at(&h, 10.0).unwrap(), 0.9));
        assert!(close(hull_min_cost(&h, 0.65).unwrap(), 2.0));
        assert!(close(hull_min_cost(&h, 0.1).unwrap(), 1.0));
        assert_eq!(hull_min_cost(&h, 0.95), None);
        // AIQ over [0, 3]: 0 on [0, 1), then a trapezoid (0.4 + 0.9) / 2 over 2, divided by 3.
        assert!(close(aiq(&h, 0.0, 3.0).unwrap(), 1.3 / 3.0));
        assert!(close(aiq(&h, 1.0, 5.0).unwrap(), (1.3 + 2.0 * 0.9) / 4.0));
        assert_eq!(aiq(&h, 2.0, 2.0), None);
    }

    #[test]
    fn split_is_deterministic_and_about_the_requested_size() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("q-{i}")).collect();
        let train = ids.iter().filter(|id| in_train(id, 7, 0.3)).count();
        assert!((2_800..3_200).contains(&train), "{train}");
        assert!(
            ids.iter()
                .all(|id| in_train(id, 7, 0.3) == in_train(id, 7, 0.3))
        );
        let other_seed = ids
            .iter()
            .filter(|id| in_train(id, 7, 0.3) != in_train(id, 8, 0.3))
            .count();
        assert!(other_seed > 1_000, "{other_seed}");
        assert!(
            ids.iter()
                .all(|id| !in_train(id, 7, 0.0) && in_train(id, 7, 1.0))
        );
    }

    #[test]
    fn fit_shrinks_towards_the_model_mean() {
        // Model 0: 10 math prompts all right, 10 chat prompts all wrong -> overall 0.5.
        let mut train = Vec::new();
        for i in 0..10 {
            train.push(prompt(&format!("m{i}"), TaskType::Math, &[1.0]));
            train.push(prompt(&format!("c{i}"), TaskType::Chat, &[0.0]));
        }
        let q = fit_quality(&train, 1);
        let (math, std) = q[0][TaskType::Math.index()].unwrap();
        assert!(close(math, (10.0 + 10.0 * 0.5) / 20.0));
        assert!(close(std, (0.75f64 * 0.25 / 21.0).sqrt()));
        assert!(close(q[0][TaskType::Chat.index()].unwrap().0, 0.25));
        // An unseen task gets the overall mean.
        assert!(close(q[0][TaskType::Code.index()].unwrap().0, 0.5));
        assert_eq!(fit_quality(&[], 2), vec![[None; 12]; 2]);
    }

    /// Two tasks, two models at $1 and $10 per 1M input tokens, every prompt 1M input tokens.
    /// Cheap is right on all math prompts and half the chat prompts; strong on all.
    fn two_task_data() -> (Vec<Model>, Vec<Prompt>) {
        let models = vec![model("cheap", 1, 1), model("strong", 10, 10)];
        let mut prompts = Vec::new();
        for i in 0..4 {
            prompts.push(prompt(&format!("math{i}"), TaskType::Math, &[1.0, 1.0]));
            let q = if i % 2 == 0 { 1.0 } else { 0.0 };
            prompts.push(prompt(&format!("chat{i}"), TaskType::Chat, &[q, 1.0]));
        }
        (models, prompts)
    }

    #[test]
    fn sweep_routes_with_the_real_funnel_and_scores_outcomes() {
        let (models, prompts) = two_task_data();
        let mut quality = [None; 12];
        quality[TaskType::Math.index()] = Some((0.95, 0.01));
        quality[TaskType::Chat.index()] = Some((0.6, 0.01));
        let mut strong_q = [None; 12];
        strong_q[TaskType::Math.index()] = Some((0.97, 0.01));
        strong_q[TaskType::Chat.index()] = Some((0.97, 0.01));
        let cands = candidates(&models, &[quality, strong_q]);
        let runs: Vec<BarRun> = [0.0, 0.5, 0.9, 0.95, 0.99]
            .iter()
            .map(|&b| run_bar(&prompts, &cands, b, 1))
            .collect();
        // 0.0 and 0.5: all cheap; 0.9 and 0.95: chat -> strong; 0.99: nobody clears, best expected
        // quality.
        assert_eq!(runs[0].choices, vec![0; 8]);
        assert_eq!(runs[1].choices, vec![0; 8]);
        assert_eq!(runs[2].choices, vec![0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(runs[3].choices, runs[2].choices);
        assert_eq!(runs[4].choices, vec![1; 8]);
        assert_eq!(runs[4].bar_met, 0);
        let r = report(&prompts, &models, 1, &runs);
        assert_eq!(r.cheapest, "cheap");
        assert_eq!(r.reference, "strong");
        // Always cheap: quality 6/8, cost $8 of $80.
        assert!(close(r.models[0].line.quality, 0.75));
        assert!(close(r.models[0].line.saved_pct.unwrap(), 90.0));
        assert!(close(r.models[0].line.retained_pct.unwrap(), 75.0));
        // Bar 0.9: quality 1, cost 4 + 40 = $44 -> 45% saved at 100% retained.
        let row = &r.sweep[2];
        assert!(close(row.line.quality, 1.0));
        assert!(close(row.line.cost_usd, 44.0));
        assert!(close(row.line.saved_pct.unwrap(), 45.0));
        assert_eq!(row.line.calls_pct, vec![50.0, 50.0]);
        assert!(close(row.pgr.unwrap(), 1.0));
        // Zero router at $44: 0.75 + 0.25 * (44 - 8) / 72 = 0.875.
        assert!(close(row.zero_router_quality.unwrap(), 0.875));
        let at95 = r.headline.router_at_95.clone().unwrap();
        assert!(close(at95.bar, 0.9) && close(at95.saved_pct, 45.0));
        // Ties (0.9 and 0.95 route alike) go to the lowest bar.
        assert!(close(r.headline.router_at_99.clone().unwrap().bar, 0.9));
        // Zero router at 95% retained: cost 8 + 72 * 0.8 = 65.6 -> 18% saved.
        assert!(close(r.headline.zero_router_saved_pct_at_95.unwrap(), 18.0));
        // Oracle: cheap wherever it is right (6 prompts), strong on 2 chat prompts.
        assert!(close(r.oracle.quality, 1.0));
        assert!(close(r.oracle.cost_usd, 6.0 + 20.0));
        // Two-model metrics: the curve is (0%, .75) x2, (50%, 1) x2, (100%, 1).
        let t = r.two_model.unwrap();
        assert_eq!((t.weak.as_str(), t.strong.as_str()), ("cheap", "strong"));
        // AUC = 0.5 * (0.75 + 1) / 2 + 0.5 * 1 = 0.9375; APGR = (0.9375 - 0.75) / 0.25.
        assert!(close(t.apgr.unwrap(), 0.75));
        assert!(close(t.cpt50_pct.unwrap(), 25.0));
        assert!(close(t.cpt80_pct.unwrap(), 40.0));
        // Optimal: 2 of 8 prompts gain, so full quality at 25% strong calls.
        assert!(close(t.optimal_cpt50_pct.unwrap(), 12.5));
        assert!(close(t.optimal_apgr.unwrap(), 1.0 - 0.25 / 2.0));
        // AIQ over [$8, $80]: router hull (8, .75) -> (44, 1) then flat.
        let router_aiq = (36.0 * 1.75 / 2.0 + 36.0) / 72.0;
        assert!(close(r.aiq.router.unwrap(), router_aiq));
        assert!(close(r.aiq.zero_router.unwrap(), 0.875));
    }

    #[test]
    fn breakdown_counts_tasks_and_reports_estimates() {
        let (_, prompts) = two_task_data();
        let (train, test) = prompts.split_at(4);
        let q = fit_quality(train, 2);
        let rows = task_breakdown(train, test, &q);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].task, TaskType::Math);
        assert_eq!((rows[0].n_train, rows[0].n_test), (2, 2));
        assert_eq!(rows[1].observed, vec![Some(0.5), Some(1.0)]);
        // A task seen only in training has no observed outcome.
        let rows = task_breakdown(&prompts[..2], &prompts[2..3], &q);
        assert_eq!(rows[1].task, TaskType::Chat);
        assert_eq!((rows[1].n_train, rows[1].n_test), (1, 0));
        assert_eq!(rows[1].observed, vec![None, None]);
        assert!(rows[1].estimated[1].is_some());
    }
}
