//! The signal loop's learner: per-workspace quality estimates with uncertainty, from outcomes
//! (explicit feedback and implicit signals), for the prompt at hand.
//!
//! Four levels, each shrunk towards the one above it:
//!
//! 1. **Prior**: the global quality table's (mean, std) for (model, task), read as a Beta
//!    distribution worth `n0 = mean (1 - mean) / std² - 1` outcomes, capped at
//!    [`LearnConfig::prior_cap`] so a workspace's own data takes over after a few dozen outcomes.
//!    A model without a prior starts at 0.5 worth [`LearnConfig::no_prior_strength`] outcomes.
//! 2. **Model level** (Bayesian update per workspace and model, every task):
//!    `p_model = (n0 · prior + Σ w·y) / (n0 + Σ w)` over the workspace's outcomes of the model.
//! 3. **Task level**: `p_task = (m · p_model + Σ_task w·y) / (m + Σ_task w)` with
//!    `m = min(task_shrink, n0 + Σ w)`: a model that does well on one task type of the workspace
//!    is expected to do well on another until that type's own outcomes say otherwise.
//! 4. **Prompt level** (nearest neighbours over prompt embeddings): the `k` most similar past
//!    prompts of the workspace on which this model has an outcome, weighted by cosine similarity
//!    (negative similarities count 0) and by the outcome's weight:
//!    `p = (Σ s·w·y + a · p_task) / (Σ s·w + a)` with `a` = [`LearnConfig::knn_shrink`].
//!    Without an embedding (or without neighbours) the estimate is `p_task`.
//!
//! The interval is the 90% interval of the Beta(p·n, (1-p)·n) posterior in its normal
//! approximation, with `n` = the evidence behind the estimate (`Σ s·w + a` at the prompt level,
//! `n0 + Σ w` at the task level). Exploration draws from the same Beta ([`Evidence::sample`]):
//! Thompson sampling.
//!
//! Observations are keyed by (request, metric, model): the same key observed again replaces the
//! earlier value (feedback is idempotent, and a replica refreshing from the database may see a row
//! twice). Per workspace, the newest [`LearnConfig::max_points`] embedded observations are kept for
//! the neighbour search (a ring); the task-level sums keep every observation.
//!
//! State is in memory and fed by the caller (the gateway loads it from the durable store at start
//! and refreshes it every few seconds, so every replica routes on the same outcomes).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use wide::{i16x8, i32x4};

use crate::TaskType;

/// Tunables of the learner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnConfig {
    /// Neighbours per model at the prompt level.
    pub k: usize,
    /// Pseudo-outcomes of the task-level estimate in the prompt-level mean.
    pub knn_shrink: f64,
    /// Pseudo-outcomes of the model-level estimate (all tasks) in a task-level mean.
    pub task_shrink: f64,
    /// Upper bound on the prior's worth, in outcomes.
    pub prior_cap: f64,
    /// The worth of the neutral 0.5 prior of a model the quality table does not rate.
    pub no_prior_strength: f64,
    /// Embedded observations kept per workspace for the neighbour search.
    pub max_points: usize,
    /// Observation keys remembered per workspace so that a repeated (request, metric, model)
    /// replaces its earlier value instead of counting twice (the oldest are forgotten first;
    /// their contribution to the sums stays). Bounds the learner's memory (~50 bytes each).
    pub max_outcomes: usize,
    /// Share of requests that explore (Thompson sampling); 0 disables exploration.
    pub explore: f64,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            k: 20,
            knn_shrink: 2.0,
            task_shrink: 10.0,
            prior_cap: 10.0,
            no_prior_strength: 2.0,
            max_points: 4_096,
            max_outcomes: 262_144,
            explore: 0.05,
        }
    }
}

impl LearnConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.k == 0 || self.k > 1000 {
            return Err(format!("k must be in 1..=1000, got {}", self.k));
        }
        if !(self.knn_shrink.is_finite() && self.knn_shrink > 0.0) {
            return Err("knn_shrink must be > 0".into());
        }
        if !(self.task_shrink.is_finite() && self.task_shrink > 0.0) {
            return Err("task_shrink must be > 0".into());
        }
        if !(self.prior_cap.is_finite() && self.prior_cap >= 0.0) {
            return Err("prior_cap must be >= 0".into());
        }
        if !(self.no_prior_strength.is_finite() && self.no_prior_strength > 0.0) {
            return Err("no_prior_strength must be > 0".into());
        }
        if self.max_points == 0 || self.max_points > 10_000_000 {
            return Err(format!(
                "max_points must be in 1..=10000000, got {}",
                self.max_points
            ));
        }
        if self.max_outcomes == 0 || self.max_outcomes > 100_000_000 {
            return Err(format!(
                "max_outcomes must be in 1..=100000000, got {}",
                self.max_outcomes
            ));
        }
        if !(0.0..=1.0).contains(&self.explore) {
            return Err(format!("explore must be in [0, 1], got {}", self.explore));
        }
        Ok(())
    }
}

/// Identity of an observation: one score per (request, metric, model).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObsKey {
    pub request_id: String,
    pub metric: String,
    pub model: String,
}

/// One outcome: how well `key.model` did on a prompt of `workspace`.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub key: ObsKey,
    pub workspace: String,
    /// The request's routed task type (None: counts at the prompt level only).
    pub task: Option<TaskType>,
    /// The prompt's unit embedding (None: counts at the task level only).
    pub embedding: Option<Vec<f32>>,
    /// Success in [0, 1].
    pub score: f64,
    /// Weight of this kind of evidence (explicit feedback 1, implicit signals less).
    pub weight: f64,
}

/// Which evidence dominates an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dominance {
    /// The prior makes up at least half of the estimate ([`Evidence::prior_share`]).
    Prior,
    /// The workspace's outcomes make up more than half of it.
    Workspace,
}

/// A learned estimate for one candidate, with the evidence behind it (for the receipt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Expected success probability for this prompt.
    pub mean: f64,
    /// 90% interval.
    pub low: f64,
    pub high: f64,
    /// The workspace's outcomes for this model and task type (weighted count, rounded down).
    pub outcomes: u64,
    /// Task-level estimate (prior updated with the workspace's outcomes of this model, then of
    /// this task).
    pub task_mean: f64,
    /// The prior's mean (None: the model has no prior, 0.5 was used).
    pub prior_mean: Option<f64>,
    /// Neighbouring past prompts used at the prompt level.
    pub neighbours: u32,
    /// Mean cosine similarity of those neighbours (0 when none).
    pub similarity: f32,
    pub dominated_by: Dominance,
    /// The prior's share of `mean` (0-1): what is left of it after shrinking through the model,
    /// task and prompt levels; the workspace's outcomes make up the rest.
    pub prior_share: f64,
    /// Evidence behind `mean`, in outcomes (for the interval and for sampling).
    pub n: f64,
}

impl Evidence {
    /// A draw from the estimate's Beta posterior (Thompson sampling).
    pub fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        use rand_distr::Distribution;
        let a = (self.mean * self.n).max(1e-3);
        let b = ((1.0 - self.mean) * self.n).max(1e-3);
        match rand_distr::Beta::new(a, b) {
            Ok(d) => d.sample(rng).clamp(0.0, 1.0),
            Err(_) => self.mean,
        }
    }

    /// One Thompson draw for a candidate whose estimates for several tasks are `evs` (the
    /// first is the request's own task): a single draw from the first posterior, the same shift
    /// applied to the others. (Independent draws per task, then the funnel's minimum over the
    /// tasks, would bias exploration against exactly the uncertain candidates.)
    pub fn sample_tasks<R: rand::Rng + ?Sized>(evs: &[Evidence], rng: &mut R) -> Vec<f64> {
        let Some(first) = evs.first() else {
            return Vec::new();
        };
        let shift = first.sample(rng) - first.mean;
        evs.iter()
            .map(|e| (e.mean + shift).clamp(0.0, 1.0))
            .collect()
    }

    /// Standard deviation of the posterior (normal approximation).
    pub fn std(&self) -> f64 {
        (self.mean * (1.0 - self.mean) / (self.n + 1.0)).sqrt()
    }
}

/// Prior (mean, std) of the global quality table -> (mean, worth in outcomes).
fn prior_strength(cfg: &LearnConfig, prior: Option<(f64, f64)>) -> (f64, f64, Option<f64>) {
    match prior {
        Some((mean, std)) if mean.is_finite() && std.is_finite() => {
            let m = mean.clamp(1e-3, 1.0 - 1e-3);
            let n = if std > 0.0 {
                (m * (1.0 - m) / (std * std) - 1.0).max(1.0)
            } else {
                cfg.prior_cap
            };
            (m, n.min(cfg.prior_cap), Some(mean))
        }
        _ => (0.5, cfg.no_prior_strength, None),
    }
}

const Z90: f64 = 1.644_853_6;

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    wy: f64,
    w: f64,
}

#[derive(Debug, Clone)]
struct Slot {
    task: Option<TaskType>,
    model: u32,
    y: f32,
    w: f32,
    /// Index and generation in the point ring, if embedded.
    point: Option<(usize, u64)>,
}

/// One workspace's learned state.
#[derive(Debug, Default)]
struct Workspace {
    dim: usize,
    models: FxHashMap<String, u32>,
    /// By a 64-bit hash of the [`ObsKey`] (the key's strings are not kept), at most
    /// `max_outcomes`, oldest forgotten first (`order`).
    obs: FxHashMap<u64, Slot>,
    order: VecDeque<u64>,
    /// Distinct observations recorded (forgotten keys included).
    count: u64,
    tasks: FxHashMap<(u8, u32), Sums>,
    /// Per model, over every task (and outcomes without a task).
    totals: FxHashMap<u32, Sums>,
    // The point ring (structure of arrays). Embeddings are stored as integers (component × 127)
    // in 8-lane i16 vectors (zero-padded to a multiple of 8), so that the scan's dot products
    // are widening multiply-adds (`pmaddwd` on x86-64's SSE2 baseline, through `wide`): several
    // times faster than f32, at half the memory.
    emb: Vec<i16x8>,
    pmodel: Vec<u32>,
    py: Vec<f32>,
    pw: Vec<f32>,
    pgen: Vec<u64>,
    /// Per model id, the ring indices of its points (so a query selects each candidate's
    /// neighbours from its own points, without a per-point lookup).
    by_model: Vec<Vec<u32>>,
    next: usize,
    generation: u64,
}

impl Workspace {
    fn model_id(&mut self, m: &str) -> u32 {
        if let Some(&i) = self.models.get(m) {
            return i;
        }
        let i = self.models.len() as u32;
        self.models.insert(m.to_owned(), i);
        i
    }

    fn observe(&mut self, cfg: &LearnConfig, o: &Observation) {
        let y = o.score.clamp(0.0, 1.0) as f32;
        let w = o.weight.max(0.0) as f32;
        if !y.is_finite() || !w.is_finite() {
            return;
        }
        let model = self.model_id(&o.key.model);
        let key = key_hash(&o.key);
        if let Some(old) = self.obs.get_mut(&key) {
            // Replace: take the old value out of the sums, update the point in place.
            let tot = self.totals.entry(old.model).or_default();
            tot.wy += f64::from(y * w) - f64::from(old.y * old.w);
            tot.w += f64::from(w) - f64::from(old.w);
            if let Some(t) = old.task {
                let s = self.tasks.entry((t.index() as u8, old.model)).or_default();
                s.wy -= f64::from(old.y * old.w);
                s.w -= f64::from(old.w);
            }
            if let Some(t) = old.task {
                let s = self.tasks.entry((t.index() as u8, old.model)).or_default();
                s.wy += f64::from(y * w);
                s.w += f64::from(w);
            }
            old.y = y;
            old.w = w;
            if let Some((i, g)) = old.point
                && self.pgen.get(i) == Some(&g)
            {
                self.py[i] = y;
                self.pw[i] = w;
            }
            return;
        }
        if let Some(t) = o.task {
            let s = self.tasks.entry((t.index() as u8, model)).or_default();
            s.wy += f64::from(y * w);
            s.w += f64::from(w);
        }
        let tot = self.totals.entry(model).or_default();
        tot.wy += f64::from(y * w);
        tot.w += f64::from(w);
        let point = match &o.embedding {
            Some(e) if !e.is_empty() && (self.dim == 0 || self.dim == e.len()) => {
                self.dim = e.len();
                self.generation += 1;
                let g = self.generation;
                let i = if self.pmodel.len() < cfg.max_points {
                    self.emb.extend(quantize_lanes(e));
                    self.pmodel.push(model);
                    self.py.push(y);
                    self.pw.push(w);
                    self.pgen.push(g);
                    self.pmodel.len() - 1
                } else {
                    let i = self.next;
                    self.next = (self.next + 1) % cfg.max_points;
                    let lanes = self.dim.div_ceil(8);
                    for (d, x) in self.emb[i * lanes..(i + 1) * lanes]
                        .iter_mut()
                        .zip(quantize_lanes(e))
                    {
                        *d = x;
                    }
                    // The evicted point leaves its model's list.
                    if let Some(list) = self.by_model.get_mut(self.pmodel[i] as usize)
                        && let Some(pos) = list.iter().position(|&p| p as usize == i)
                    {
                        list.swap_remove(pos);
                    }
                    self.pmodel[i] = model;
                    self.py[i] = y;
                    self.pw[i] = w;
                    self.pgen[i] = g;
                    i
                };
                if self.by_model.len() <= model as usize {
                    self.by_model.resize_with(model as usize + 1, Vec::new);
                }
                self.by_model[model as usize].push(i as u32);
                Some((i, g))
            }
            _ => None,
        };
        self.count += 1;
        self.order.push_back(key);
        while self.order.len() > cfg.max_outcomes {
            if let Some(k) = self.order.pop_front() {
                self.obs.remove(&k);
            }
        }
        self.obs.insert(
            key,
            Slot {
                task: o.task,
                model,
                y,
                w,
                point,
            },
        );
    }
}

/// A candidate to estimate: its model name and its prior per task (the quality table's
/// (mean, std), indexed by [`TaskType::index`]).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub model: &'a str,
    pub prior: &'a [Option<(f64, f64)>; 12],
}

/// What a workspace has outcomes for ([`Learner::observed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Distinct outcomes recorded.
    pub outcomes: u64,
    /// Embedded outcomes held for the neighbour search.
    pub points: usize,
    /// (task type, model, summed outcome weight), sorted by task then model.
    pub pairs: Vec<(Option<TaskType>, String, f64)>,
}

/// The learner: every workspace's state, shared by all requests of the process.
#[derive(Debug, Default)]
pub struct Learner {
    cfg: LearnConfig,
    workspaces: RwLock<FxHashMap<String, Arc<RwLock<Workspace>>>>,
}

/// A unit-vector component as an integer in [-127, 127] (× 127).
fn quantize_component(x: f32) -> i16 {
    (x * 127.0).round().clamp(-127.0, 127.0) as i16
}

/// The identity of an observation as 64 bits (SipHash with fixed keys over its three strings;
/// a collision would merge two outcomes of one workspace, at odds of ~n²/2⁶⁵).
fn key_hash(k: &ObsKey) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
}

/// A unit vector as integers (component × 127) in 8-lane vectors, zero-padded.
fn quantize_lanes(e: &[f32]) -> impl Iterator<Item = i16x8> + '_ {
    e.chunks(8).map(|c| {
        let mut a = [0i16; 8];
        for (d, x) in a.iter_mut().zip(c) {
            *d = quantize_component(*x);
        }
        i16x8::new(a)
    })
}

/// Integer dot products of `q` with every row (`q.len()` vectors) of `emb`, into `out`: eight
/// `pmaddwd` per 64-dimension row. (Auto-vectorisation of the scalar loop was fragile: the
/// same source gave full-width, half-width or scalar code depending on inlining.)
fn dots(q: &[i16x8], emb: &[i16x8], out: &mut Vec<i32>) {
    out.clear();
    if q.is_empty() {
        return;
    }
    out.extend(emb.chunks_exact(q.len()).map(|row| {
        row.iter()
            .zip(q)
            .fold(i32x4::ZERO, |acc, (a, b)| acc + a.dot(*b))
            .reduce_add()
    }));
}

#[cfg(test)]
fn dot(a: &[i16], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// The `k` entries of `buf` with the highest scores (in no particular order), in place.
fn top_k(buf: &mut Vec<(i32, u32)>, k: usize) {
    if buf.len() > k && k > 0 {
        buf.select_nth_unstable_by(k - 1, |a, b| b.0.cmp(&a.0));
        buf.truncate(k);
    } else if k == 0 {
        buf.clear();
    }
}

/// Cosine similarity from an integer dot product of two unit vectors.
const DOT_SCALE: f32 = 1.0 / (127.0 * 127.0);

impl Learner {
    pub fn new(cfg: LearnConfig) -> Learner {
        Learner {
            cfg,
            workspaces: RwLock::new(FxHashMap::default()),
        }
    }

    pub fn config(&self) -> &LearnConfig {
        &self.cfg
    }

    fn workspace(&self, ws: &str) -> Option<Arc<RwLock<Workspace>>> {
        self.workspaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ws)
            .cloned()
    }

    /// Record (or replace) one outcome.
    pub fn observe(&self, o: &Observation) {
        let ws = match self.workspace(&o.workspace) {
            Some(w) => w,
            None => self
                .workspaces
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(o.workspace.clone())
                .or_default()
                .clone(),
        };
        ws.write()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&self.cfg, o);
    }

    /// Outcomes recorded for `workspace` (distinct keys).
    pub fn outcomes(&self, workspace: &str) -> usize {
        self.workspace(workspace).map_or(0, |w| {
            usize::try_from(w.read().unwrap_or_else(|e| e.into_inner()).count).unwrap_or(usize::MAX)
        })
    }

    /// What `workspace` has outcomes for: every (task type, model) pair with its summed outcome
    /// weight (task `None`: outcomes recorded without a task, e.g. on pinned requests), the
    /// distinct outcomes recorded and the embedded points held. `None` for a workspace without
    /// any outcome.
    pub fn observed(&self, workspace: &str) -> Option<Observed> {
        let state = self.workspace(workspace)?;
        let w = state.read().unwrap_or_else(|e| e.into_inner());
        let mut names = vec![String::new(); w.models.len()];
        for (m, &i) in &w.models {
            if let Some(n) = names.get_mut(i as usize) {
                n.clone_from(m);
            }
        }
        let name = |id: u32| names.get(id as usize).cloned().unwrap_or_default();
        let mut pairs: Vec<(Option<TaskType>, String, f64)> = w
            .tasks
            .iter()
            .filter(|(_, s)| s.w > 0.0)
            .filter_map(|(&(t, m), s)| {
                TaskType::ALL
                    .get(usize::from(t))
                    .map(|t| (Some(*t), name(m), s.w))
            })
            .collect();
        // Outcomes without a task: the model's total minus its per-task sums.
        for (&m, tot) in &w.totals {
            let tasked: f64 = w
                .tasks
                .iter()
                .filter(|((_, mm), _)| *mm == m)
                .map(|(_, s)| s.w)
                .sum();
            let rest = tot.w - tasked;
            if rest > 1e-9 {
                pairs.push((None, name(m), rest));
            }
        }
        pairs.sort_by(|a, b| {
            (a.0.map(TaskType::index), &a.1).cmp(&(b.0.map(TaskType::index), &b.1))
        });
        Some(Observed {
            outcomes: w.count,
            points: w.pmodel.len(),
            pairs,
        })
    }

    /// Estimates for each candidate (outer) and each of `tasks` (inner), for a prompt of
    /// `workspace` with embedding `emb`.
    pub fn estimate(
        &self,
        workspace: &str,
        tasks: &[TaskType],
        emb: Option<&[f32]>,
        cands: &[Query<'_>],
    ) -> Vec<Vec<Evidence>> {
        let cfg = &self.cfg;
        let state = self.workspace(workspace);
        let guard = state
            .as_ref()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()));
        let ws = guard.as_deref();
        // The workspace's id for each candidate's model.
        let ids: Vec<Option<u32>> = cands
            .iter()
            .map(|c| ws.and_then(|w| w.models.get(c.model).copied()))
            .collect();
        // Neighbours per candidate: one pass over the ring for the similarities, then a top-k
        // selection among each candidate's own points.
        // Candidate ci's neighbours are flat[tops[ci].0..tops[ci].1].
        let mut flat: Vec<(i32, u32)> = Vec::new();
        let mut tops: Vec<(usize, usize)> = vec![(0, 0); cands.len()];
        if let (Some(w), Some(e)) = (ws, emb)
            && w.dim == e.len()
            && w.dim > 0
            && ids.iter().any(Option::is_some)
        {
            let q: Vec<i16x8> = quantize_lanes(e).collect();
            let mut scores = Vec::with_capacity(w.pmodel.len());
            dots(&q, &w.emb, &mut scores);
            let mut buf: Vec<(i32, u32)> = Vec::new();
            flat.reserve(cands.len() * cfg.k);
            for (ci, id) in ids.iter().enumerate() {
                let Some(list) = id.and_then(|id| w.by_model.get(id as usize)) else {
                    continue;
                };
                buf.clear();
                buf.extend(
                    list.iter()
                        .filter_map(|&i| scores.get(i as usize).map(|&s| (s, i))),
                );
                top_k(&mut buf, cfg.k);
                let start = flat.len();
                flat.extend_from_slice(&buf);
                tops[ci] = (start, flat.len());
            }
        }
        cands
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                // Prompt-level sums (task independent).
                let (mut swy, mut sw, mut ssim, mut nn) = (0f64, 0f64, 0f64, 0u32);
                if let Some(w) = ws {
                    for &(s, i) in &flat[tops[ci].0..tops[ci].1] {
                        let i = i as usize;
                        let s = f64::from((s as f32 * DOT_SCALE).clamp(0.0, 1.0));
                        let wt = s * f64::from(w.pw[i]);
                        swy += wt * f64::from(w.py[i]);
                        sw += wt;
                        ssim += s;
                        nn += 1;
                    }
                }
                tasks
                    .iter()
                    .map(|t| {
                        let (pm, n0, prior_mean) = prior_strength(cfg, c.prior[t.index()]);
                        let (sums, all) = match (ws, ids[ci]) {
                            (Some(w), Some(id)) => (
                                w.tasks
                                    .get(&(t.index() as u8, id))
                                    .copied()
                                    .unwrap_or_default(),
                                w.totals.get(&id).copied().unwrap_or_default(),
                            ),
                            _ => (Sums::default(), Sums::default()),
                        };
                        let sw_t = sums.w.max(0.0);
                        let sw_all = all.w.max(0.0);
                        // Model level: the prior updated with every outcome of the model.
                        let model_mean = (n0 * pm + all.wy.max(0.0)) / (n0 + sw_all);
                        // Task level: shrunk towards the model level.
                        let m = cfg.task_shrink.min(n0 + sw_all);
                        let task_mean =
                            ((m * model_mean + sums.wy.max(0.0)) / (m + sw_t)).clamp(0.0, 1.0);
                        let share_task = (m / (m + sw_t)) * (n0 / (n0 + sw_all));
                        let (mean, n, prior_share) = if nn > 0 && sw > 0.0 {
                            let a = cfg.knn_shrink;
                            (
                                (swy + a * task_mean) / (sw + a),
                                sw + a,
                                a / (sw + a) * share_task,
                            )
                        } else {
                            (task_mean, m + sw_t, share_task)
                        };
                        let mean = mean.clamp(0.0, 1.0);
                        let half = Z90 * (mean * (1.0 - mean) / (n + 1.0)).sqrt();
                        Evidence {
                            mean,
                            low: (mean - half).max(0.0),
                            high: (mean + half).min(1.0),
                            outcomes: sw_t.floor() as u64,
                            task_mean,
                            prior_mean,
                            neighbours: nn,
                            similarity: if nn > 0 {
                                (ssim / f64::from(nn)) as f32
                            } else {
                                0.0
                            },
                            dominated_by: if prior_share < 0.5 {
                                Dominance::Workspace
                            } else {
                                Dominance::Prior
                            },
                            prior_share,
                            n,
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn key(r: &str, m: &str) -> ObsKey {
        ObsKey {
            request_id: r.into(),
            metric: "score".into(),
            model: m.into(),
        }
    }

    fn obs(r: &str, m: &str, e: Option<Vec<f32>>, y: f64) -> Observation {
        Observation {
            key: key(r, m),
            workspace: "ws".into(),
            task: Some(TaskType::Code),
            embedding: e,
            score: y,
            weight: 1.0,
        }
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    const NO_PRIOR: [Option<(f64, f64)>; 12] = [None; 12];

    fn q(model: &str) -> Query<'_> {
        Query {
            model,
            prior: &NO_PRIOR,
        }
    }

    #[test]
    fn without_data_the_prior_rules_and_is_capped() {
        let l = Learner::new(LearnConfig::default());
        let mut prior = [None; 12];
        prior[TaskType::Code.index()] = Some((0.7, 0.01)); // worth ~2100 outcomes, capped at 10
        let est = l.estimate(
            "ws",
            &[TaskType::Code],
            None,
            &[Query {
                model: "m",
                prior: &prior,
            }],
        );
        let e = &est[0][0];
        assert!((e.mean - 0.7).abs() < 1e-9);
        assert_eq!(e.dominated_by, Dominance::Prior);
        assert!((e.n - 10.0).abs() < 1e-9, "{}", e.n);
        assert_eq!(e.prior_mean, Some(0.7));
        // No prior: 0.5 worth 2.
        let e = &l.estimate("ws", &[TaskType::Code], None, &[q("x")])[0][0];
        assert!((e.mean - 0.5).abs() < 1e-9 && (e.n - 2.0).abs() < 1e-9);
        assert_eq!(e.prior_mean, None);
        assert!(e.low < 0.5 && e.high > 0.5);
    }

    #[test]
    fn task_level_update_is_the_beta_posterior_and_data_takes_over() {
        let l = Learner::new(LearnConfig::default());
        let mut prior = [None; 12];
        prior[TaskType::Code.index()] = Some((0.8, 0.1)); // n0 = 0.16/0.01 - 1 = 15 -> cap 10
        for i in 0..30 {
            l.observe(&obs(
                &format!("r{i}"),
                "m",
                None,
                if i < 6 { 1.0 } else { 0.0 },
            ));
        }
        let e = &l.estimate(
            "ws",
            &[TaskType::Code],
            None,
            &[Query {
                model: "m",
                prior: &prior,
            }],
        )[0][0];
        // model level (10·0.8 + 6) / 40 = 0.35; task level (10·0.35 + 6) / (10 + 30)
        let expect = (10.0 * 0.35 + 6.0) / (10.0 + 30.0);
        assert!((e.mean - expect).abs() < 1e-9, "{} vs {expect}", e.mean);
        assert_eq!(e.outcomes, 30);
        assert_eq!(e.dominated_by, Dominance::Workspace);
        // Another task of the same model (no prior, no outcomes of its own) follows the model
        // level: (2·0.5 + 6) / (2 + 30).
        let e = &l.estimate("ws", &[TaskType::Math], None, &[q("m")])[0][0];
        assert!((e.mean - 7.0 / 32.0).abs() < 1e-9, "{}", e.mean);
        assert_eq!(e.outcomes, 0);
        // Another model is untouched.
        let e = &l.estimate("ws", &[TaskType::Code], None, &[q("other")])[0][0];
        assert!((e.mean - 0.5).abs() < 1e-9);
    }

    #[test]
    fn replacing_an_observation_does_not_double_count() {
        let l = Learner::new(LearnConfig::default());
        let e1 = unit(&[1.0, 0.0, 0.0, 0.0]);
        l.observe(&obs("r1", "m", Some(e1.clone()), 0.0));
        l.observe(&obs("r1", "m", Some(e1.clone()), 1.0));
        l.observe(&obs("r1", "m", Some(e1.clone()), 1.0));
        assert_eq!(l.outcomes("ws"), 1);
        let e = &l.estimate("ws", &[TaskType::Code], Some(&e1), &[q("m")])[0][0];
        // model: (2·0.5 + 1) / (2 + 1) = 2/3; task: m = min(10, 3): (3·2/3 + 1) / (3 + 1) = 3/4;
        // prompt: (1·1 + 2·3/4) / (1 + 2)
        let task = 0.75;
        assert!((e.task_mean - task).abs() < 1e-6);
        assert!(
            (e.mean - (1.0 + 2.0 * task) / 3.0).abs() < 1e-6,
            "{}",
            e.mean
        );
        assert_eq!(e.neighbours, 1);
    }

    #[test]
    fn neighbours_separate_prompts_of_the_same_task() {
        // Model "cheap" succeeds on prompts near A and fails near B; the task-level mean is 0.5,
        // the prompt-level estimates must tell the two regions apart.
        let l = Learner::new(LearnConfig::default());
        let a = unit(&[1.0, 0.1, 0.0, 0.0]);
        let b = unit(&[0.0, 0.1, 1.0, 0.0]);
        for i in 0..40 {
            let near_a = i % 2 == 0;
            let mut e = if near_a { a.clone() } else { b.clone() };
            e[3] = (i as f32) * 0.001;
            l.observe(&obs(
                &format!("r{i}"),
                "cheap",
                Some(unit(&e)),
                if near_a { 1.0 } else { 0.0 },
            ));
        }
        let ea = &l.estimate("ws", &[TaskType::Code], Some(&a), &[q("cheap")])[0][0];
        let eb = &l.estimate("ws", &[TaskType::Code], Some(&b), &[q("cheap")])[0][0];
        assert!((ea.task_mean - eb.task_mean).abs() < 1e-9);
        assert!(ea.mean > 0.85, "{ea:?}");
        assert!(eb.mean < 0.15, "{eb:?}");
        assert_eq!(ea.neighbours, 20);
        assert!(ea.similarity > 0.99);
        // Intervals narrow with evidence.
        let cold = &l.estimate("other", &[TaskType::Code], Some(&a), &[q("cheap")])[0][0];
        assert!(ea.high - ea.low < cold.high - cold.low);
        // Another workspace knows nothing of this.
        assert_eq!(cold.neighbours, 0);
        assert!((cold.mean - 0.5).abs() < 1e-9);
    }

    #[test]
    fn neighbours_are_per_model() {
        let l = Learner::new(LearnConfig::default());
        let a = unit(&[1.0, 0.0]);
        for i in 0..10 {
            l.observe(&obs(&format!("r{i}"), "m1", Some(a.clone()), 1.0));
            l.observe(&obs(&format!("r{i}"), "m2", Some(a.clone()), 0.0));
        }
        let est = l.estimate(
            "ws",
            &[TaskType::Code],
            Some(&a),
            &[q("m1"), q("m2"), q("m3")],
        );
        assert!(est[0][0].mean > 0.8 && est[1][0].mean < 0.2, "{est:?}");
        assert_eq!(est[2][0].neighbours, 0);
    }

    #[test]
    fn the_ring_keeps_the_newest_points() {
        let l = Learner::new(LearnConfig {
            max_points: 4,
            ..LearnConfig::default()
        });
        let a = unit(&[1.0, 0.0]);
        for i in 0..10 {
            l.observe(&obs(
                &format!("r{i}"),
                "m",
                Some(a.clone()),
                if i < 6 { 0.0 } else { 1.0 },
            ));
        }
        let e = &l.estimate("ws", &[TaskType::Code], Some(&a), &[q("m")])[0][0];
        assert_eq!(e.neighbours, 4);
        // Only the 4 newest (all successes) are neighbours; the task level keeps all 10.
        assert_eq!(e.outcomes, 10);
        let model = (2.0 * 0.5 + 4.0) / 12.0;
        let task = (10.0 * model + 4.0) / 20.0;
        assert!(
            (e.mean - (4.0 + 2.0 * task) / 6.0).abs() < 1e-6,
            "{}",
            e.mean
        );
        // Replacing an evicted observation updates the task sums only.
        l.observe(&obs("r0", "m", Some(a.clone()), 1.0));
        let e2 = &l.estimate("ws", &[TaskType::Code], Some(&a), &[q("m")])[0][0];
        // model (1 + 5) / 12 = 0.5, task (10·0.5 + 5) / 20 = 0.5
        assert!((e2.task_mean - 0.5).abs() < 1e-9, "{}", e2.task_mean);
        assert_eq!(e2.neighbours, 4);
    }

    #[test]
    fn neighbour_selection_matches_a_brute_force_scan() {
        // 64 dimensions (the fixed-size kernel), three models, a ring that wraps, so the
        // per-model lists are exercised through evictions.
        let l = Learner::new(LearnConfig {
            max_points: 50,
            k: 5,
            ..LearnConfig::default()
        });
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut all: Vec<(String, Vec<f32>, f64)> = Vec::new();
        for i in 0..137 {
            let e = unit(&(0..64).map(|_| next()).collect::<Vec<_>>());
            let m = ["a", "b", "c"][i % 3].to_owned();
            let y = f64::from(next() + 0.5);
            l.observe(&obs(&format!("r{i}"), &m, Some(e.clone()), y));
            all.push((m, e, y));
        }
        let query = unit(&(0..64).map(|_| next()).collect::<Vec<_>>());
        let q16: Vec<i16> = query.iter().map(|x| quantize_component(*x)).collect();
        let live = &all[all.len() - 50..];
        for m in ["a", "b", "c"] {
            let e = &l.estimate("ws", &[TaskType::Code], Some(&query), &[q(m)])[0][0];
            let mut sims: Vec<i32> = live
                .iter()
                .filter(|(mm, _, _)| mm == m)
                .map(|(_, v, _)| {
                    let v16: Vec<i16> = v.iter().map(|x| quantize_component(*x)).collect();
                    dot(&q16, &v16)
                })
                .collect();
            sims.sort_unstable_by(|a, b| b.cmp(a));
            sims.truncate(5);
            let want: f64 = sims
                .iter()
                .map(|s| f64::from((*s as f32 * DOT_SCALE).clamp(0.0, 1.0)))
                .sum::<f64>()
                / 5.0;
            assert_eq!(e.neighbours, 5, "{m}");
            assert!(
                (f64::from(e.similarity) - want).abs() < 1e-5,
                "{m}: {} vs {want}",
                e.similarity
            );
        }
        // The vector kernel agrees with the scalar one, padding included.
        let a: Vec<f32> = unit(
            &(0..70)
                .map(|i| ((i * 7 % 23) as f32) - 11.0)
                .collect::<Vec<_>>(),
        );
        let b: Vec<f32> = unit(
            &(0..70)
                .map(|i| ((i * 13 % 29) as f32) - 14.0)
                .collect::<Vec<_>>(),
        );
        let (qa, qb): (Vec<i16x8>, Vec<i16x8>) =
            (quantize_lanes(&a).collect(), quantize_lanes(&b).collect());
        assert_eq!(qa.len(), 9);
        let sa: Vec<i16> = a.iter().map(|x| quantize_component(*x)).collect();
        let sb: Vec<i16> = b.iter().map(|x| quantize_component(*x)).collect();
        let rows: Vec<i16x8> = qb.iter().chain(&qa).copied().collect();
        let mut out = Vec::new();
        dots(&qa, &rows, &mut out);
        assert_eq!(out, vec![dot(&sa, &sb), dot(&sa, &sa)]);
    }

    #[test]
    fn remembered_keys_are_bounded() {
        let l = Learner::new(LearnConfig {
            max_outcomes: 3,
            ..LearnConfig::default()
        });
        for i in 0..5 {
            l.observe(&obs(&format!("r{i}"), "m", None, 1.0));
        }
        assert_eq!(l.outcomes("ws"), 5);
        let ws = l.workspace("ws").unwrap();
        assert_eq!(ws.read().unwrap().obs.len(), 3);
        // r4 is remembered: replaced, not counted twice.
        l.observe(&obs("r4", "m", None, 0.0));
        let w = ws.read().unwrap();
        let id = w.models["m"];
        assert_eq!(w.totals[&id].w, 5.0);
        assert_eq!(w.totals[&id].wy, 4.0);
        drop(w);
        // r0 was forgotten: it counts again (its first value stays in the sums).
        l.observe(&obs("r0", "m", None, 1.0));
        let w = ws.read().unwrap();
        assert_eq!(w.totals[&id].w, 6.0);
        assert_eq!(w.obs.len(), 3);
        assert_eq!(w.count, 6);
    }

    #[test]
    fn thompson_samples_follow_the_posterior() {
        let e = Evidence {
            mean: 0.3,
            low: 0.0,
            high: 1.0,
            outcomes: 0,
            task_mean: 0.3,
            prior_mean: None,
            neighbours: 0,
            similarity: 0.0,
            dominated_by: Dominance::Prior,
            prior_share: 1.0,
            n: 50.0,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let xs: Vec<f64> = (0..4000).map(|_| e.sample(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.3).abs() < 0.01, "{mean}");
        // Beta(15, 35) variance = 0.3*0.7/51
        assert!((var - 0.21 / 51.0).abs() < 0.0015, "{var}");
        assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn config_validation() {
        assert!(LearnConfig::default().validate().is_ok());
        for bad in [
            LearnConfig {
                k: 0,
                ..Default::default()
            },
            LearnConfig {
                explore: 1.5,
                ..Default::default()
            },
            LearnConfig {
                knn_shrink: f64::NAN,
                ..Default::default()
            },
            LearnConfig {
                max_points: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
