//! The routing funnel: every candidate is kept or dropped, in a fixed order, with a reason; the
//! cheapest survivor wins. A pure function ([`route`]) of the request's features, the candidates
//! and the policy, so it can be property-tested and dry-run.
//!
//! Order of the checks (the first failing one is the candidate's drop reason):
//! 1. capability: context window vs estimated tokens, tools, vision, JSON mode;
//! 2. policy: the caller's allowlist (key, workspace, or the request's own `models` list);
//! 3. health: the provider is currently failing;
//! 4. quality: expected quality for the task below the bar (or no evidence at all);
//! 5. cost: estimated cost above the caller's ceiling.
//!
//! The cheapest survivor (estimated input + output cost) is chosen; ties go to lower latency,
//! then higher quality, then the name. If nothing survives steps 4-5, the best-quality model that
//! passed steps 1-3 is used and the decision says the bar could not be met (or, with `strict`,
//! nothing is chosen and the request fails).
//!
//! Low classifier confidence makes the quality check conservative: a candidate must clear the bar
//! for every task the classifier finds plausible (probability ≥ [`PLAUSIBLE_TASK_PROB`]), and
//! its expected quality is the minimum over those tasks.

use serde::{Deserialize, Serialize};

use crate::TaskType;

/// Below this classifier confidence the conservative quality check applies.
pub const LOW_CONFIDENCE: f32 = 0.55;
/// With low confidence, tasks at least this probable are all checked.
pub const PLAUSIBLE_TASK_PROB: f32 = 0.15;

/// Prices in micro-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    pub input: u64,
    pub output: u64,
}

impl Prices {
    /// Estimated cost in micro-USD (rounded up: an estimate used as a ceiling).
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let total = u128::from(input_tokens) * u128::from(self.input)
            + u128::from(output_tokens) * u128::from(self.output);
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// One model the request could go to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub model: String,
    pub provider: String,
    pub prices: Option<Prices>,
    pub context_window: Option<u32>,
    pub tools: bool,
    pub vision: bool,
    pub json_mode: bool,
    /// The caller may use this model (key/workspace allowlist, request's `models`).
    pub allowed: bool,
    /// The provider is not currently failing.
    pub healthy: bool,
    /// Typical latency in ms, for tie-breaks (None: unknown).
    pub latency_ms: Option<f64>,
    /// Expected quality per task type (indexed by [`TaskType::index`]), with its standard
    /// deviation; None where there is no evidence.
    pub quality: [Option<(f64, f64)>; 12],
}

/// Where the quality bar came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarSource {
    Default,
    Key,
    Header,
    Body,
}

/// The request's side of routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteInput {
    pub task: TaskType,
    pub confidence: f32,
    /// Classifier probabilities, indexed by [`TaskType::index`].
    pub probs: [f32; 12],
    pub input_tokens: u64,
    /// Output tokens to budget: the caller's cap, else the task's expected length.
    pub output_tokens: u64,
    pub needs_tools: bool,
    pub needs_vision: bool,
    pub needs_json: bool,
    pub bar: f64,
    pub bar_source: BarSource,
    pub max_cost_micros: Option<u64>,
    pub strict: bool,
    /// What a successful answer is worth to the caller, in USD. Set: among the candidates that
    /// pass every check, the one with the highest expected value `value_usd · quality − cost`
    /// wins (a pricier model wins when its expected quality gain is worth its extra cost). Unset:
    /// the cheapest survivor wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_usd: Option<f64>,
}

/// Why a candidate was dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DropReason {
    ContextWindow {
        needed: u64,
        window: u32,
    },
    NoTools,
    NoVision,
    NoJsonMode,
    NotAllowed,
    Unhealthy,
    NoQualityEvidence,
    BelowBar {
        expected: f64,
        bar: f64,
    },
    NoPrice,
    OverCost {
        estimated_micros: u64,
        ceiling_micros: u64,
    },
    /// Passed every check but a cheaper (or equally cheap and faster) candidate won.
    Costlier {
        estimated_micros: u64,
        chosen_micros: u64,
    },
    /// Passed every check but another candidate had a higher expected value
    /// (`value_usd · quality − cost`, in USD) for this request.
    LowerValue {
        value_usd: f64,
        chosen_value_usd: f64,
    },
}

impl DropReason {
    /// A short human phrase ("costlier", "below the bar", ...).
    pub fn phrase(&self) -> String {
        match self {
            DropReason::ContextWindow { needed, window } => {
                format!("context window {window} < {needed} tokens")
            }
            DropReason::NoTools => "no tool support".into(),
            DropReason::NoVision => "no image input".into(),
            DropReason::NoJsonMode => "no JSON mode".into(),
            DropReason::NotAllowed => "not allowed for this caller".into(),
            DropReason::Unhealthy => "provider failing".into(),
            DropReason::NoQualityEvidence => "no quality evidence for the task".into(),
            DropReason::BelowBar { expected, bar } => {
                format!("below the bar ({expected:.2} < {bar:.2})")
            }
            DropReason::NoPrice => "price unknown".into(),
            DropReason::OverCost {
                estimated_micros,
                ceiling_micros,
            } => format!(
                "over the cost ceiling (${:.6} > ${:.6})",
                usd(*estimated_micros),
                usd(*ceiling_micros)
            ),
            DropReason::Costlier { .. } => "costlier".into(),
            DropReason::LowerValue { .. } => "lower expected value".into(),
        }
    }
}

fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Chosen,
    Passed,
    Dropped,
}

/// One candidate's fate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateOutcome {
    pub model: String,
    pub provider: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<DropReason>,
    /// Expected quality used for the decision (the conservative minimum when confidence was low).
    pub expected_quality: Option<f64>,
    pub quality_std: Option<f64>,
    pub estimated_cost_micros: Option<u64>,
    /// The learned estimate behind `expected_quality` (the signal loop), for the first task
    /// checked; None when routing used the priors only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::learn::Evidence>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Index into `candidates` of the chosen model; None when nothing could be chosen.
    pub chosen: Option<usize>,
    pub candidates: Vec<CandidateOutcome>,
    /// A candidate cleared the bar and the ceiling.
    pub bar_met: bool,
    /// Low classifier confidence: the conservative check was used, over these tasks.
    pub conservative_tasks: Vec<TaskType>,
}

impl Decision {
    pub fn chosen(&self) -> Option<&CandidateOutcome> {
        self.chosen.and_then(|i| self.candidates.get(i))
    }
}

/// The tasks whose quality a candidate must clear.
pub fn tasks_to_check(input: &RouteInput) -> Vec<TaskType> {
    if input.confidence >= LOW_CONFIDENCE {
        return vec![input.task];
    }
    let mut v: Vec<TaskType> = TaskType::ALL
        .into_iter()
        .filter(|t| input.probs[t.index()] >= PLAUSIBLE_TASK_PROB)
        .collect();
    if !v.contains(&input.task) {
        v.push(input.task);
    }
    v
}

/// Expected quality over `tasks`: the minimum mean (and the std that goes with it).
fn quality(c: &Candidate, tasks: &[TaskType]) -> Option<(f64, f64)> {
    let mut worst: Option<(f64, f64)> = None;
    for t in tasks {
        let q = c.quality[t.index()]?;
        if worst.is_none_or(|w| q.0 < w.0) {
            worst = Some(q);
        }
    }
    worst
}

/// Route one request. See the module docs for the order of checks.
pub fn route(input: &RouteInput, candidates: &[Candidate]) -> Decision {
    let tasks = tasks_to_check(input);
    let needed = input.input_tokens + input.output_tokens;
    let mut outcomes: Vec<CandidateOutcome> = Vec::with_capacity(candidates.len());
    // Candidates that passed capability, policy and health (for the best-quality fallback).
    let mut eligible: Vec<usize> = Vec::new();
    // Candidates that passed everything.
    let mut survivors: Vec<usize> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let q = quality(c, &tasks);
        let cost = c
            .prices
            .map(|p| p.cost_micros(input.input_tokens, input.output_tokens));
        let reason = if let Some(w) = c.context_window.filter(|w| u64::from(*w) < needed) {
            Some(DropReason::ContextWindow { needed, window: w })
        } else if input.needs_tools && !c.tools {
            Some(DropReason::NoTools)
        } else if input.needs_vision && !c.vision {
            Some(DropReason::NoVision)
        } else if input.needs_json && !c.json_mode {
            Some(DropReason::NoJsonMode)
        } else if !c.allowed {
            Some(DropReason::NotAllowed)
        } else if !c.healthy {
            Some(DropReason::Unhealthy)
        } else {
            eligible.push(i);
            match (q, cost) {
                (None, _) if input.bar > 0.0 => Some(DropReason::NoQualityEvidence),
                (Some((mean, _)), _) if mean < input.bar => Some(DropReason::BelowBar {
                    expected: mean,
                    bar: input.bar,
                }),
                (_, None) => Some(DropReason::NoPrice),
                (_, Some(est)) => match input.max_cost_micros {
                    Some(ceiling) if est > ceiling => Some(DropReason::OverCost {
                        estimated_micros: est,
                        ceiling_micros: ceiling,
                    }),
                    _ => {
                        survivors.push(i);
                        None
                    }
                },
            }
        };
        outcomes.push(CandidateOutcome {
            model: c.model.clone(),
            provider: c.provider.clone(),
            status: if reason.is_some() {
                Status::Dropped
            } else {
                Status::Passed
            },
            reason,
            expected_quality: q.map(|x| x.0),
            quality_std: q.map(|x| x.1),
            estimated_cost_micros: cost,
            evidence: None,
        });
    }

    let cost_of = |i: usize| outcomes[i].estimated_cost_micros.unwrap_or(u64::MAX);
    let quality_of = |i: usize| outcomes[i].expected_quality.unwrap_or(-1.0);
    let latency_of = |i: usize| candidates[i].latency_ms.unwrap_or(f64::MAX);
    let better_value = |a: usize, b: usize| {
        cost_of(a)
            .cmp(&cost_of(b))
            .then(latency_of(a).total_cmp(&latency_of(b)))
            .then(quality_of(b).total_cmp(&quality_of(a)))
            .then(candidates[a].model.cmp(&candidates[b].model))
    };
    // Expected value in USD of a candidate (value rule).
    let value_of = |i: usize, v: f64| {
        v * quality_of(i).max(0.0)
            - outcomes[i].estimated_cost_micros.unwrap_or(u64::MAX) as f64 / 1e6
    };
    let bar_met = !survivors.is_empty();
    let chosen = if bar_met {
        match input.value_usd {
            Some(v) => survivors.iter().copied().min_by(|&a, &b| {
                value_of(b, v)
                    .total_cmp(&value_of(a, v))
                    .then(better_value(a, b))
            }),
            None => survivors
                .iter()
                .copied()
                .min_by(|&a, &b| better_value(a, b)),
        }
    } else if input.strict {
        None
    } else {
        // Best quality among the eligible, cheapest among equals.
        eligible.iter().copied().min_by(|&a, &b| {
            quality_of(b)
                .total_cmp(&quality_of(a))
                .then(better_value(a, b))
        })
    };
    let costs: Vec<u64> = (0..outcomes.len()).map(cost_of).collect();
    let values: Option<Vec<f64>> = input
        .value_usd
        .map(|v| (0..outcomes.len()).map(|i| value_of(i, v)).collect());
    if let Some(ci) = chosen {
        let chosen_cost = costs[ci];
        outcomes[ci].status = Status::Chosen;
        outcomes[ci].reason = None;
        for &i in &survivors {
            if i != ci {
                outcomes[i].status = Status::Dropped;
                outcomes[i].reason = Some(match &values {
                    Some(v) => DropReason::LowerValue {
                        value_usd: v[i],
                        chosen_value_usd: v[ci],
                    },
                    None => DropReason::Costlier {
                        estimated_micros: costs[i],
                        chosen_micros: chosen_cost,
                    },
                });
            }
        }
    }
    Decision {
        chosen,
        candidates: outcomes,
        bar_met,
        conservative_tasks: if tasks.len() > 1 || input.confidence < LOW_CONFIDENCE {
            tasks
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(model: &str, input: u64, output: u64, q: f64) -> Candidate {
        Candidate {
            model: model.into(),
            provider: "p".into(),
            prices: Some(Prices { input, output }),
            context_window: Some(128_000),
            tools: true,
            vision: true,
            json_mode: true,
            allowed: true,
            healthy: true,
            latency_ms: None,
            quality: [Some((q, 0.05)); 12],
        }
    }

    fn input(bar: f64) -> RouteInput {
        let mut probs = [0.0; 12];
        probs[TaskType::Summarization.index()] = 0.9;
        probs[TaskType::Chat.index()] = 0.1;
        RouteInput {
            task: TaskType::Summarization,
            confidence: 0.9,
            probs,
            input_tokens: 1000,
            output_tokens: 200,
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

    #[test]
    fn the_value_rule_pays_for_quality_only_when_it_is_worth_it() {
        // 1000 in / 200 out: big costs $0.006, tiny $0.00018; quality 0.9 vs 0.5.
        let cands = [
            cand("big", 3_000_000, 15_000_000, 0.9),
            cand("tiny", 100_000, 400_000, 0.5),
        ];
        let at = |v: f64| {
            let mut i = input(0.0);
            i.value_usd = Some(v);
            route(&i, &cands)
        };
        // +0.4 quality for +$0.00582: worth it above $0.01455 per good answer.
        let d = at(0.01);
        assert_eq!(d.chosen().unwrap().model, "tiny");
        match &d.candidates[0].reason {
            Some(DropReason::LowerValue {
                value_usd,
                chosen_value_usd,
            }) => {
                assert!(
                    (value_usd - (0.01 * 0.9 - 0.006)).abs() < 1e-9,
                    "{value_usd}"
                );
                assert!((chosen_value_usd - (0.01 * 0.5 - 0.00018)).abs() < 1e-9);
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(at(0.02).chosen().unwrap().model, "big");
        // The bar still drops candidates before the value rule.
        let mut i = input(0.6);
        i.value_usd = Some(0.001);
        assert_eq!(route(&i, &cands).chosen().unwrap().model, "big");
        // Without a value: the cheapest survivor.
        assert_eq!(route(&input(0.0), &cands).chosen().unwrap().model, "tiny");
    }

    #[test]
    fn cheapest_model_clearing_the_bar_wins() {
        let cands = [
            cand("big", 3_000_000, 15_000_000, 0.9),
            cand("mid", 1_000_000, 4_000_000, 0.8),
            cand("tiny", 100_000, 400_000, 0.5),
        ];
        let d = route(&input(0.7), &cands);
        assert_eq!(d.chosen().unwrap().model, "mid");
        assert!(d.bar_met);
        assert!(matches!(
            d.candidates[0].reason,
            Some(DropReason::Costlier { .. })
        ));
        assert!(matches!(
            d.candidates[2].reason,
            Some(DropReason::BelowBar { .. })
        ));
        // A lower bar admits the tiny one.
        assert_eq!(route(&input(0.4), &cands).chosen().unwrap().model, "tiny");
    }

    #[test]
    fn capability_policy_health_and_cost_drop_in_order() {
        let mut a = cand("small-ctx", 1, 1, 0.9);
        a.context_window = Some(500);
        let mut b = cand("no-tools", 1, 1, 0.9);
        b.tools = false;
        let mut c = cand("forbidden", 1, 1, 0.9);
        c.allowed = false;
        let mut d = cand("down", 1, 1, 0.9);
        d.healthy = false;
        let e = cand("pricey", 100_000_000, 100_000_000, 0.9);
        let f = cand("ok", 1_000_000, 1_000_000, 0.9);
        let mut inp = input(0.5);
        inp.needs_tools = true;
        inp.max_cost_micros = Some(10_000);
        let dec = route(&inp, &[a, b, c, d, e, f]);
        let reasons: Vec<_> = dec.candidates.iter().map(|o| o.reason.clone()).collect();
        assert!(matches!(
            reasons[0],
            Some(DropReason::ContextWindow {
                needed: 1200,
                window: 500
            })
        ));
        assert_eq!(reasons[1], Some(DropReason::NoTools));
        assert_eq!(reasons[2], Some(DropReason::NotAllowed));
        assert_eq!(reasons[3], Some(DropReason::Unhealthy));
        assert!(matches!(reasons[4], Some(DropReason::OverCost { .. })));
        assert_eq!(dec.chosen().unwrap().model, "ok");
    }

    #[test]
    fn unmet_bar_falls_back_to_best_quality_or_fails_when_strict() {
        let cands = [
            cand("a", 1_000_000, 1_000_000, 0.6),
            cand("b", 2_000_000, 2_000_000, 0.7),
        ];
        let d = route(&input(0.95), &cands);
        assert!(!d.bar_met);
        assert_eq!(d.chosen().unwrap().model, "b");
        let mut strict = input(0.95);
        strict.strict = true;
        let d = route(&strict, &cands);
        assert!(d.chosen.is_none());
    }

    #[test]
    fn low_confidence_checks_every_plausible_task() {
        let mut weak_at_code = cand("cheap", 100_000, 100_000, 0.9);
        weak_at_code.quality[TaskType::Code.index()] = Some((0.3, 0.1));
        let strong = cand("strong", 1_000_000, 1_000_000, 0.85);
        let mut inp = input(0.8);
        inp.confidence = 0.4;
        inp.probs = [0.0; 12];
        inp.probs[TaskType::Summarization.index()] = 0.4;
        inp.probs[TaskType::Code.index()] = 0.35;
        inp.probs[TaskType::Chat.index()] = 0.25;
        let d = route(&inp, &[weak_at_code.clone(), strong.clone()]);
        assert_eq!(d.chosen().unwrap().model, "strong");
        assert!(d.conservative_tasks.contains(&TaskType::Code));
        inp.confidence = 0.9;
        assert_eq!(
            route(&inp, &[weak_at_code, strong]).chosen().unwrap().model,
            "cheap"
        );
    }

    #[test]
    fn ties_go_to_lower_latency() {
        let mut a = cand("a", 1_000_000, 1_000_000, 0.9);
        a.latency_ms = Some(900.0);
        let mut b = cand("b", 1_000_000, 1_000_000, 0.9);
        b.latency_ms = Some(300.0);
        assert_eq!(route(&input(0.5), &[a, b]).chosen().unwrap().model, "b");
    }

    proptest! {
        /// The chosen model clears the bar and the ceiling when any candidate does, and no
        /// other such candidate is strictly cheaper.
        #[test]
        fn chosen_is_the_cheapest_qualified(
            specs in proptest::collection::vec((1u64..20_000_000, 1u64..60_000_000, 0.0f64..1.0, any::<bool>()), 1..12),
            bar in 0.0f64..1.0,
            ceiling in proptest::option::of(1u64..100_000),
        ) {
            let cands: Vec<Candidate> = specs.iter().enumerate().map(|(i, (pi, po, q, ok))| {
                let mut c = cand(&format!("m{i}"), *pi, *po, *q);
                c.healthy = *ok;
                c
            }).collect();
            let mut inp = input(bar);
            inp.max_cost_micros = ceiling;
            let d = route(&inp, &cands);
            let qualified: Vec<&CandidateOutcome> = d.candidates.iter().filter(|o| {
                let c = cands.iter().find(|c| c.model == o.model).unwrap();
                c.healthy && o.expected_quality.unwrap() >= bar
                    && ceiling.is_none_or(|m| o.estimated_cost_micros.unwrap() <= m)
            }).collect();
            prop_assert_eq!(d.bar_met, !qualified.is_empty());
            if let Some(ch) = d.chosen() {
                if d.bar_met {
                    prop_assert!(ch.expected_quality.unwrap() >= bar);
                    for o in &qualified {
                        prop_assert!(ch.estimated_cost_micros.unwrap() <= o.estimated_cost_micros.unwrap());
                    }
                }
                prop_assert_eq!(d.candidates.iter().filter(|o| o.status == Status::Chosen).count(), 1);
            } else {
                prop_assert!(cands.iter().all(|c| !c.healthy));
            }
        }
    }
}
