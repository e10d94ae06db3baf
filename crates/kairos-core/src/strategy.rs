//! Routing strategies (Portkey-style, nestable): `single`, `fallback`, `loadbalance`,
//! `conditional`. A strategy is selected by using its name as the model (`model="support-bot"`)
//! or with the `x-kairos-config: NAME` header.
//!
//! ```toml
//! [strategies.support-bot]
//! mode = "fallback"
//! on_status = [429, 500, 502, 503, 504, 529]   # which failures move on (default below)
//! targets = [
//!   { model = "gpt-4o-mini", retry = { attempts = 2 } },
//!   { model = "claude-haiku-4-5", params = { temperature = 0.2 } },
//!   { strategy = "cheap-pool" },
//! ]
//! ```
//!
//! This module holds the file format and its validation ([`validate_strategies`]) and the
//! compiled tree ([`Node`]) the executor in [`crate::dispatch`] walks. Model names are resolved
//! when the gateway is built ([`compile`]), so a typo is a startup error, not a runtime one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::catalog::ModelMode;
use crate::config::ConfigIssue;
use crate::gateway::Resolved;
use crate::retry::RetryPolicy;

// ---------------------------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    pub mode: String,
    #[serde(default)]
    pub targets: Vec<TargetSection>,
    /// Statuses that move a fallback/loadbalance on (default: 408, 429, 500, 502, 503, 504, 529).
    pub on_status: Option<Vec<u16>>,
    /// Failure kinds that move on besides statuses: `connect`, `timeout`, `stream_cut`,
    /// `invalid_response`, `context_length`, `unavailable` (default: all but `context_length`).
    pub on_errors: Option<Vec<String>>,
    /// `conditional` only.
    #[serde(default)]
    pub conditions: Vec<ConditionSection>,
    /// `conditional` only: the target name used when no condition matches.
    pub default: Option<String>,
    /// `loadbalance` only: try the other targets when the picked one fails (default true).
    pub fallback_on_failure: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// A model name (catalog id, alias, `[[models]]` id or `<provider>/<model>`).
    pub model: Option<String>,
    /// Or another strategy, by name.
    pub strategy: Option<String>,
    /// Name for `conditional`'s `then`/`default` (default: the model or strategy name).
    pub name: Option<String>,
    /// `loadbalance` weight (default 1).
    pub weight: Option<f64>,
    /// Request parameters this target overrides (`temperature`, `top_p`, `max_tokens`, ...).
    #[serde(default)]
    pub params: Map<String, Value>,
    pub retry: Option<RetrySection>,
    pub timeouts: Option<TimeoutSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts on this target, the first one included (1 = no retry).
    pub attempts: Option<u32>,
    pub base_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub retry_after_cap_ms: Option<u64>,
    pub on_status: Option<Vec<u16>>,
    pub retry_ambiguous: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSection {
    pub ttfb_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSection {
    /// Field path -> operator table, all must hold. Paths: `metadata.<key>`, `model`, `user`,
    /// `key`, `stream`, `task`.
    pub when: BTreeMap<String, Operator>,
    pub then: String,
}

/// One comparison. Exactly one field should be set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub eq: Option<Value>,
    pub ne: Option<Value>,
    #[serde(rename = "in")]
    pub in_: Option<Vec<Value>>,
    pub nin: Option<Vec<Value>>,
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
    pub exists: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Validated, compiled form
// ---------------------------------------------------------------------------------------------

/// Which failures make a fallback or load balancer move on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    pub statuses: Vec<u16>,
    pub connect: bool,
    pub timeout: bool,
    pub stream_cut: bool,
    pub invalid_response: bool,
    pub context_length: bool,
    /// Target skipped because it is ejected or cooling down.
    pub unavailable: bool,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            statuses: vec![408, 429, 500, 502, 503, 504, 529],
            connect: true,
            timeout: true,
            stream_cut: true,
            invalid_response: true,
            context_length: false,
            unavailable: true,
        }
    }
}

/// Per-target timeouts (None: the provider's configured value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub ttfb: Option<Duration>,
    pub idle: Option<Duration>,
    pub total: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Leaf {
    pub resolved: Resolved,
    pub params: Map<String, Value>,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
}

/// A compiled strategy tree.
#[derive(Debug, Clone)]
pub enum Node {
    Leaf(Box<Leaf>),
    Fallback {
        children: Vec<Arc<Node>>,
        triggers: Triggers,
    },
    LoadBalance {
        children: Vec<(Arc<Node>, f64)>,
        triggers: Triggers,
        fallback_on_failure: bool,
    },
    Conditional {
        branches: Vec<(BTreeMap<String, Operator>, Arc<Node>)>,
        default: Arc<Node>,
    },
}

impl Node {
    /// Visits every leaf (every target the plan may call).
    pub fn for_each_leaf(&self, f: &mut dyn FnMut(&Leaf)) {
        match self {
            Node::Leaf(l) => f(l),
            Node::Fallback { children, .. } => children.iter().for_each(|c| c.for_each_leaf(f)),
            Node::LoadBalance { children, .. } => {
                children.iter().for_each(|(c, _)| c.for_each_leaf(f));
            }
            Node::Conditional { branches, default } => {
                branches.iter().for_each(|(_, c)| c.for_each_leaf(f));
                default.for_each_leaf(f);
            }
        }
    }
}

/// Request parameters a target may override.
pub const OVERRIDABLE_PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "parallel_tool_calls",
];

fn push(issues: &mut Vec<ConfigIssue>, path: impl Into<String>, message: impl Into<String>) {
    issues.push(ConfigIssue {
        path: path.into(),
        message: message.into(),
    });
}

/// Validate the `[strategies]` table: shapes, references and cycles (model names are checked
/// later, against the catalog, by [`compile`]).
pub fn validate_strategies(s: &BTreeMap<String, StrategySection>, issues: &mut Vec<ConfigIssue>) {
    for (name, st) in s {
        let path = format!("strategies.{name}");
        if name == "auto" || name == "kairos/auto" {
            push(issues, &path, "`auto` is reserved for routing");
        }
        let mode = st.mode.as_str();
        if !matches!(mode, "single" | "fallback" | "loadbalance" | "conditional") {
            push(
                issues,
                format!("{path}.mode"),
                format!(
                    "unknown mode `{mode}`; expected single, fallback, loadbalance or conditional"
                ),
            );
            continue;
        }
        if st.targets.is_empty() {
            push(
                issues,
                format!("{path}.targets"),
                "needs at least one target",
            );
        }
        if mode == "single" && st.targets.len() > 1 {
            push(
                issues,
                format!("{path}.targets"),
                "`single` takes exactly one target",
            );
        }
        if mode != "conditional" && (!st.conditions.is_empty() || st.default.is_some()) {
            push(
                issues,
                &path,
                "`conditions`/`default` only apply to mode = \"conditional\"",
            );
        }
        if matches!(mode, "single" | "conditional")
            && (st.on_status.is_some() || st.on_errors.is_some())
        {
            push(
                issues,
                &path,
                "`on_status`/`on_errors` only apply to mode = \"fallback\" or \"loadbalance\"",
            );
        }
        if mode != "loadbalance" && st.fallback_on_failure.is_some() {
            push(
                issues,
                &path,
                "`fallback_on_failure` only applies to mode = \"loadbalance\"",
            );
        }
        for code in st.on_status.iter().flatten() {
            if !(400..=599).contains(code) {
                push(
                    issues,
                    format!("{path}.on_status"),
                    format!("{code} is not an error status"),
                );
            }
        }
        for e in st.on_errors.iter().flatten() {
            if !matches!(
                e.as_str(),
                "connect"
                    | "timeout"
                    | "stream_cut"
                    | "invalid_response"
                    | "context_length"
                    | "unavailable"
            ) {
                push(
                    issues,
                    format!("{path}.on_errors"),
                    format!(
                        "unknown error kind `{e}`; expected connect, timeout, stream_cut, invalid_response, context_length or unavailable"
                    ),
                );
            }
        }
        let mut names = HashSet::new();
        for (i, t) in st.targets.iter().enumerate() {
            let tp = format!("{path}.targets[{i}]");
            match (&t.model, &t.strategy) {
                (Some(_), Some(_)) | (None, None) => {
                    push(issues, &tp, "give exactly one of `model` or `strategy`")
                }
                (None, Some(s2)) if !s.contains_key(s2) => push(
                    issues,
                    format!("{tp}.strategy"),
                    format!("no strategy named `{s2}`"),
                ),
                _ => {}
            }
            let tname = t
                .name
                .clone()
                .or_else(|| t.model.clone())
                .or_else(|| t.strategy.clone())
                .unwrap_or_default();
            if !names.insert(tname.clone()) && mode == "conditional" {
                push(
                    issues,
                    &tp,
                    format!("two targets are named `{tname}`; give them distinct `name`s"),
                );
            }
            if let Some(w) = t.weight
                && !(w.is_finite() && w > 0.0)
            {
                push(issues, format!("{tp}.weight"), "must be above 0");
            }
            if t.strategy.is_some()
                && (!t.params.is_empty() || t.retry.is_some() || t.timeouts.is_some())
            {
                push(
                    issues,
                    &tp,
                    "`params`, `retry` and `timeouts` apply to model targets; set them on the targets of the named strategy",
                );
            }
            if t.weight.is_some() && mode != "loadbalance" {
                push(
                    issues,
                    format!("{tp}.weight"),
                    "only applies to mode = \"loadbalance\"",
                );
            }
            for k in t.params.keys() {
                if !OVERRIDABLE_PARAMS.contains(&k.as_str()) {
                    push(
                        issues,
                        format!("{tp}.params.{k}"),
                        format!(
                            "not an overridable parameter; expected one of {}",
                            OVERRIDABLE_PARAMS.join(", ")
                        ),
                    );
                }
            }
            if let Some(r) = &t.retry {
                if r.attempts == Some(0) || r.attempts.is_some_and(|a| a > 10) {
                    push(
                        issues,
                        format!("{tp}.retry.attempts"),
                        "must be between 1 and 10",
                    );
                }
                for code in r.on_status.iter().flatten() {
                    if !(400..=599).contains(code) {
                        push(
                            issues,
                            format!("{tp}.retry.on_status"),
                            format!("{code} is not an error status"),
                        );
                    }
                }
            }
            if let Some(to) = &t.timeouts {
                for (f, v) in [
                    ("ttfb_ms", to.ttfb_ms),
                    ("idle_ms", to.idle_ms),
                    ("total_ms", to.total_ms),
                ] {
                    if v.is_some_and(|v| v == 0 || v > 24 * 3_600_000) {
                        push(
                            issues,
                            format!("{tp}.timeouts.{f}"),
                            "must be between 1 ms and 24 h",
                        );
                    }
                }
            }
        }
        if mode == "conditional" {
            if st.default.is_none() {
                push(
                    issues,
                    format!("{path}.default"),
                    "required for mode = \"conditional\"",
                );
            }
            for (i, c) in st.conditions.iter().enumerate() {
                if !names.contains(&c.then) {
                    push(
                        issues,
                        format!("{path}.conditions[{i}].then"),
                        format!("no target named `{}` in this strategy", c.then),
                    );
                }
                for (field, op) in &c.when {
                    let known = field == "model"
                        || field == "user"
                        || field == "key"
                        || field == "stream"
                        || field == "task"
                        || field
                            .strip_prefix("metadata.")
                            .is_some_and(|k| !k.is_empty());
                    if !known {
                        push(
                            issues,
                            format!("{path}.conditions[{i}].when.{field}"),
                            "unknown field; expected metadata.<key>, model, user, key, stream or task",
                        );
                    }
                    let n = [
                        op.eq.is_some(),
                        op.ne.is_some(),
                        op.in_.is_some(),
                        op.nin.is_some(),
                        op.gt.is_some(),
                        op.gte.is_some(),
                        op.lt.is_some(),
                        op.lte.is_some(),
                        op.exists.is_some(),
                    ]
                    .iter()
                    .filter(|b| **b)
                    .count();
                    if n == 0 {
                        push(
                            issues,
                            format!("{path}.conditions[{i}].when.{field}"),
                            "needs an operator (eq, ne, in, nin, gt, gte, lt, lte, exists)",
                        );
                    }
                }
            }
            if let Some(d) = &st.default
                && !names.contains(d)
            {
                push(
                    issues,
                    format!("{path}.default"),
                    format!("no target named `{d}` in this strategy"),
                );
            }
        }
    }
    // Cycles.
    for name in s.keys() {
        let mut stack = vec![(name.clone(), vec![name.clone()])];
        while let Some((cur, trail)) = stack.pop() {
            let Some(st) = s.get(&cur) else { continue };
            for t in &st.targets {
                if let Some(next) = &t.strategy {
                    if next == name {
                        push(
                            issues,
                            format!("strategies.{name}"),
                            format!(
                                "strategies refer to each other in a cycle: {} -> {next}",
                                trail.join(" -> ")
                            ),
                        );
                        stack.clear();
                        break;
                    }
                    if !trail.contains(next) {
                        let mut t2 = trail.clone();
                        t2.push(next.clone());
                        stack.push((next.clone(), t2));
                    }
                }
            }
        }
    }
}

/// Retry defaults (`[resilience]`) a target's `retry` table overrides.
pub fn retry_policy(defaults: &RetryPolicy, r: Option<&RetrySection>) -> RetryPolicy {
    let mut p = defaults.clone();
    if let Some(r) = r {
        if let Some(a) = r.attempts {
            p.max_attempts = a;
        }
        if let Some(v) = r.base_backoff_ms {
            p.base_backoff = Duration::from_millis(v);
        }
        if let Some(v) = r.max_backoff_ms {
            p.max_backoff = Duration::from_millis(v);
        }
        if let Some(v) = r.retry_after_cap_ms {
            p.retry_after_cap = Duration::from_millis(v);
        }
        if let Some(v) = &r.on_status {
            p.on_status = v.clone();
        }
        if let Some(v) = r.retry_ambiguous {
            p.retry_ambiguous = v;
        }
    }
    p
}

fn triggers(st: &StrategySection) -> Triggers {
    let mut t = Triggers::default();
    if let Some(s) = &st.on_status {
        t.statuses = s.clone();
    }
    if let Some(e) = &st.on_errors {
        let has = |k: &str| e.iter().any(|x| x == k);
        t.connect = has("connect");
        t.timeout = has("timeout");
        t.stream_cut = has("stream_cut");
        t.invalid_response = has("invalid_response");
        t.context_length = has("context_length");
        t.unavailable = has("unavailable");
    }
    t
}

/// Compile every strategy, resolving model names with `resolve`. Errors are reported with their
/// paths (a model that does not exist or is not a chat model).
pub fn compile(
    s: &BTreeMap<String, StrategySection>,
    retry_defaults: &RetryPolicy,
    resolve: &dyn Fn(&str) -> Option<Resolved>,
) -> Result<BTreeMap<String, Arc<Node>>, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut out: BTreeMap<String, Arc<Node>> = BTreeMap::new();
    // Compile in dependency order: repeat until every strategy whose children are done is done.
    let mut pending: Vec<&String> = s.keys().collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|name| {
            let st = &s[*name];
            let ready = st
                .targets
                .iter()
                .all(|t| t.strategy.as_ref().is_none_or(|d| out.contains_key(d)));
            if !ready {
                return true;
            }
            let mut children: Vec<(String, Arc<Node>, f64)> = Vec::new();
            for (i, t) in st.targets.iter().enumerate() {
                let path = format!("strategies.{name}.targets[{i}]");
                let node = if let Some(d) = &t.strategy {
                    out[d].clone()
                } else if let Some(m) = &t.model {
                    match resolve(m) {
                        Some(r) if r.entry.mode == ModelMode::Chat => Arc::new(Node::Leaf(Box::new(Leaf {
                            resolved: r,
                            params: t.params.clone(),
                            retry: retry_policy(retry_defaults, t.retry.as_ref()),
                            timeouts: Timeouts {
                                ttfb: t.timeouts.as_ref().and_then(|x| x.ttfb_ms).map(Duration::from_millis),
                                idle: t.timeouts.as_ref().and_then(|x| x.idle_ms).map(Duration::from_millis),
                                total: t.timeouts.as_ref().and_then(|x| x.total_ms).map(Duration::from_millis),
                            },
                        }))),
                        Some(_) => {
                            push(&mut issues, format!("{path}.model"), format!("`{m}` is not a chat model"));
                            continue;
                        }
                        None => {
                            push(
                                &mut issues,
                                format!("{path}.model"),
                                format!("no model `{m}` is available (unknown, or its provider is not configured)"),
                            );
                            continue;
                        }
                    }
                } else {
                    continue;
                };
                let tname = t
                    .name
                    .clone()
                    .or_else(|| t.model.clone())
                    .or_else(|| t.strategy.clone())
                    .unwrap_or_default();
                children.push((tname, node, t.weight.unwrap_or(1.0)));
            }
            if children.is_empty() {
                return false;
            }
            let node = match st.mode.as_str() {
                "single" => children[0].1.clone(),
                "fallback" => Arc::new(Node::Fallback {
                    children: children.iter().map(|c| c.1.clone()).collect(),
                    triggers: triggers(st),
                }),
                "loadbalance" => Arc::new(Node::LoadBalance {
                    children: children.iter().map(|c| (c.1.clone(), c.2)).collect(),
                    triggers: triggers(st),
                    fallback_on_failure: st.fallback_on_failure.unwrap_or(true),
                }),
                _ => {
                    let by_name = |n: &str| children.iter().find(|c| c.0 == n).map(|c| c.1.clone());
                    let Some(default) = st.default.as_deref().and_then(by_name) else {
                        return false;
                    };
                    Arc::new(Node::Conditional {
                        branches: st
                            .conditions
                            .iter()
                            .filter_map(|c| by_name(&c.then).map(|n| (c.when.clone(), n)))
                            .collect(),
                        default,
                    })
                }
            };
            out.insert((*name).clone(), node);
            false
        });
        if pending.len() == before {
            break; // a cycle (already reported by validation)
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Evaluate a conditional branch against the request's facts.
pub fn matches(when: &BTreeMap<String, Operator>, facts: &dyn Fn(&str) -> Option<Value>) -> bool {
    when.iter().all(|(field, op)| {
        let v = facts(field);
        let num = v.as_ref().and_then(Value::as_f64);
        op.exists.is_none_or(|e| e == v.is_some())
            && op.eq.as_ref().is_none_or(|x| v.as_ref() == Some(x))
            && op.ne.as_ref().is_none_or(|x| v.as_ref() != Some(x))
            && op
                .in_
                .as_ref()
                .is_none_or(|xs| v.as_ref().is_some_and(|v| xs.contains(v)))
            && op
                .nin
                .as_ref()
                .is_none_or(|xs| v.as_ref().is_none_or(|v| !xs.contains(v)))
            && op.gt.is_none_or(|x| num.is_some_and(|n| n > x))
            && op.gte.is_none_or(|x| num.is_some_and(|n| n >= x))
            && op.lt.is_none_or(|x| num.is_some_and(|n| n < x))
            && op.lte.is_none_or(|x| num.is_some_and(|n| n <= x))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BTreeMap<String, StrategySection> {
        #[derive(Deserialize)]
        struct F {
            strategies: BTreeMap<String, StrategySection>,
        }
        toml::from_str::<F>(text).unwrap().strategies
    }

    #[test]
    fn validation_reports_shapes_references_and_cycles() {
        let s = parse(
            r#"
[strategies.a]
mode = "fallback"
targets = [{ strategy = "b" }, { model = "m", params = { api_base = "x" } }]
[strategies.b]
mode = "loadbalance"
targets = [{ strategy = "a", weight = 0 }]
[strategies.c]
mode = "conditional"
targets = [{ model = "x", name = "cheap" }]
conditions = [{ when = { "metadata.plan" = { eq = "free" } }, then = "nope" }]
[strategies.d]
mode = "magic"
[strategies.e]
mode = "single"
on_status = [503]
targets = [{ strategy = "c", params = { temperature = 0 } }]
"#,
        );
        let mut issues = Vec::new();
        validate_strategies(&s, &mut issues);
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for p in [
            "strategies.a.targets[1].params.api_base",
            "strategies.b.targets[0].weight",
            "strategies.c.default",
            "strategies.c.conditions[0].then",
            "strategies.d.mode",
            "strategies.a",
            "strategies.e",
            "strategies.e.targets[0]",
        ] {
            assert!(paths.contains(&p), "missing {p} in {paths:?}");
        }
        assert!(issues.iter().any(|i| i.message.contains("cycle")));
    }

    #[test]
    fn conditions_match() {
        let mut when = BTreeMap::new();
        when.insert(
            "metadata.plan".to_owned(),
            Operator {
                in_: Some(vec![Value::from("free"), Value::from("trial")]),
                ..Default::default()
            },
        );
        when.insert(
            "metadata.tokens".to_owned(),
            Operator {
                lt: Some(100.0),
                ..Default::default()
            },
        );
        let facts = |plan: &'static str, tokens: i64| {
            move |f: &str| match f {
                "metadata.plan" => Some(Value::from(plan)),
                "metadata.tokens" => Some(Value::from(tokens)),
                _ => None,
            }
        };
        assert!(matches(&when, &facts("free", 10)));
        assert!(!matches(&when, &facts("pro", 10)));
        assert!(!matches(&when, &facts("trial", 500)));
    }
}
