//! The routing receipt: what was decided for one request and why, readable by anyone.
//!
//! Stored with the request's ledger row, returned by `GET /v1/receipts/{id}` and `POST
//! /v1/route`, printed by `kairos receipt ID`.

use serde::{Deserialize, Serialize};

use crate::TaskType;
use crate::funnel::{BarSource, CandidateOutcome, Decision, DropReason, Status};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub version: u32,
    pub request_id: String,
    pub requested_model: String,
    /// False when the caller turned routing off (the reference model served the request).
    pub routed: bool,
    pub classification: ClassificationInfo,
    pub bar: BarInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    pub strict: bool,
    pub estimate: TokenEstimate,
    pub candidates: Vec<CandidateOutcome>,
    pub chosen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_provider: Option<String>,
    /// A candidate cleared the bar (and the cost ceiling).
    pub bar_met: bool,
    /// Non-empty when low classifier confidence made the quality check conservative.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conservative_tasks: Vec<TaskType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    pub sources: Sources,
    /// The signal loop's part in the decision (None: priors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<LearningInfo>,
    /// Filled in from the ledger once the request finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Actual>,
    /// The prompt's embedding (quantised) for the ledger row; not part of the receipt's JSON.
    #[serde(skip)]
    pub embedding: Option<String>,
}

/// How learned state shaped a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningInfo {
    /// The workspace whose outcomes were used ("" = requests made without a virtual key).
    pub workspace: String,
    /// Outcomes the workspace has recorded (all models and tasks).
    pub workspace_outcomes: u64,
    /// This request explored: candidates' qualities were drawn from their posteriors (Thompson
    /// sampling) instead of taking the estimates.
    pub exploration: bool,
    /// When exploring: the model the estimates alone would have chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy_choice: Option<String>,
    /// The value of a successful answer used by the value rule, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_usd: Option<f64>,
    /// The embedding table that represented the prompt.
    pub embedder: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationInfo {
    pub task: TaskType,
    pub confidence: f32,
    pub classifier: String,
    /// The most probable tasks, most probable first.
    pub top: Vec<TaskProb>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProb {
    pub task: TaskType,
    pub p: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarInfo {
    pub value: f64,
    pub source: BarSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEstimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub model: String,
    /// Why this model is the baseline (`configured`, or `best quality for the task`).
    pub basis: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_saving_usd: Option<f64>,
    /// 0-100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_saving_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sources {
    pub quality: String,
    pub prices: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actual {
    pub status_code: i32,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saving_vs_reference_usd: Option<f64>,
}

fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Everything needed to write a receipt besides the decision.
pub struct ReceiptContext<'a> {
    pub request_id: &'a str,
    pub requested_model: &'a str,
    pub classification: ClassificationInfo,
    pub bar: BarInfo,
    pub max_cost_micros: Option<u64>,
    pub strict: bool,
    pub estimate: TokenEstimate,
    /// Configured baseline model, if any (else the best-quality candidate is the baseline).
    pub reference_model: Option<&'a str>,
    pub sources: Sources,
}

impl Receipt {
    /// Takes the decision by value: its candidate list moves into the receipt (no copy on the
    /// request path).
    pub fn new(ctx: ReceiptContext<'_>, decision: Decision) -> Receipt {
        let chosen = decision.chosen();
        let reference = reference(ctx.reference_model, &decision);
        let chosen_cost = chosen.and_then(|c| c.estimated_cost_micros);
        let chosen_model = chosen.map(|c| c.model.clone());
        let chosen_provider = chosen.map(|c| c.provider.clone());
        let reference = reference.map(|(r, basis)| {
            let ref_cost = r.estimated_cost_micros;
            let saving = match (ref_cost, chosen_cost) {
                (Some(rc), Some(cc)) => Some(rc as f64 - cc as f64),
                _ => None,
            };
            Reference {
                model: r.model.clone(),
                basis: basis.to_owned(),
                estimated_cost_usd: ref_cost.map(usd),
                estimated_saving_usd: saving.map(|s| s / 1e6),
                estimated_saving_pct: match (ref_cost, saving) {
                    (Some(rc), Some(s)) if rc > 0 => Some((s / rc as f64 * 1000.0).round() / 10.0),
                    _ => None,
                },
            }
        });
        Receipt {
            version: 1,
            request_id: ctx.request_id.to_owned(),
            requested_model: ctx.requested_model.to_owned(),
            routed: true,
            classification: ctx.classification,
            bar: ctx.bar,
            max_cost_usd: ctx.max_cost_micros.map(usd),
            strict: ctx.strict,
            estimate: ctx.estimate,
            bar_met: decision.bar_met,
            chosen: chosen_model,
            chosen_provider,
            conservative_tasks: decision.conservative_tasks,
            candidates: decision.candidates,
            estimated_cost_usd: chosen_cost.map(usd),
            reference,
            sources: ctx.sources,
            learning: None,
            actual: None,
            embedding: None,
        }
    }

    /// One readable paragraph, e.g. "classified as summarization (0.94); gemini-2.5-flash passed
    /// at $0.000400; claude-sonnet-4-5 dropped: costlier; routed gemini-2.5-flash, saved 96% vs
    /// baseline".
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "classified as {} ({:.2})",
            self.classification.task.as_str(),
            self.classification.confidence
        )];
        if !self.conservative_tasks.is_empty() {
            parts.push(format!(
                "low confidence: quality checked for {}",
                self.conservative_tasks
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        parts.push(format!(
            "bar {:.2} ({})",
            self.bar.value,
            match self.bar.source {
                BarSource::Default => "default",
                BarSource::Key => "key",
                BarSource::Header => "header",
                BarSource::Body => "request body",
            }
        ));
        for c in &self.candidates {
            let cost = c
                .estimated_cost_micros
                .map(|m| format!(" at ${:.6}", usd(m)))
                .unwrap_or_default();
            let q = c
                .expected_quality
                .map(|q| format!(", quality {q:.2}"))
                .unwrap_or_default();
            parts.push(match (&c.status, &c.reason) {
                (Status::Chosen, _) => format!("{} chosen{cost}{q}", c.model),
                (Status::Passed, _) => format!("{} passed{cost}{q}", c.model),
                (Status::Dropped, Some(r)) => format!("{} dropped: {}", c.model, r.phrase()),
                (Status::Dropped, None) => format!("{} dropped", c.model),
            });
        }
        match &self.chosen {
            Some(m) => {
                let mut s = format!("routed {m}");
                if !self.bar_met {
                    s.push_str(" (no candidate met the bar: best quality used)");
                }
                if let Some(r) = &self.reference
                    && let Some(p) = r.estimated_saving_pct
                {
                    s.push_str(&format!(", saved {p:.0}% vs baseline {}", r.model));
                }
                parts.push(s);
            }
            None => parts.push("no model could be chosen".into()),
        }
        if let Some(a) = &self.actual {
            parts.push(format!(
                "actual: {} ({}), {} in / {} out tokens{}",
                a.outcome,
                a.status_code,
                a.input_tokens,
                a.output_tokens,
                a.cost_usd.map(|c| format!(", ${c:.6}")).unwrap_or_default()
            ));
        }
        parts.join("; ")
    }
}

/// The baseline: the configured reference model if it is a candidate, else the candidate with
/// the highest expected quality (what the caller would likely pin without routing).
fn reference<'d>(
    configured: Option<&str>,
    d: &'d Decision,
) -> Option<(&'d CandidateOutcome, &'static str)> {
    if let Some(m) = configured
        && let Some(c) = d.candidates.iter().find(|c| c.model == m)
    {
        return Some((c, "configured"));
    }
    d.candidates
        .iter()
        .filter(|c| {
            c.expected_quality.is_some()
                && c.estimated_cost_micros.is_some()
                && !matches!(
                    c.reason,
                    Some(
                        DropReason::ContextWindow { .. }
                            | DropReason::NoTools
                            | DropReason::NoVision
                            | DropReason::NoJsonMode
                            | DropReason::NotAllowed
                            | DropReason::Unhealthy
                    )
                )
        })
        .max_by(|a, b| {
            a.expected_quality
                .unwrap_or(0.0)
                .total_cmp(&b.expected_quality.unwrap_or(0.0))
                .then(b.estimated_cost_micros.cmp(&a.estimated_cost_micros))
        })
        .map(|c| (c, "best expected quality for the task"))
}
